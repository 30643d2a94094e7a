import Foundation
import Synchronization

/// A value behind a `Synchronization.Mutex`, shareable across tasks and threads (a reference, so
/// closures and services can hold the same one).
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    public init(_ value: Value) { mutex = Mutex(value) }

    public func withLock<R: Sendable, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try mutex.withLock { (value: inout Value) throws(E) -> R in try body(&value) }
    }

    public var current: Value { withLock { $0 } }

    public func set(_ newValue: Value) { withLock { $0 = newValue } }
}

/// Wakes a sleeping loop early (new job files, shutdown): the waiter is resumed by the signal,
/// not by polling.
public final class Wakeup: Sendable {
    private struct State {
        var pending = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        /// Waits that timed out or were canceled before their continuation was stored.
        var expired: Set<UInt64> = []
        var nextID: UInt64 = 0
    }
    private let state = Mutex(State())

    public init() {}

    public func signal() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            if s.waiters.isEmpty { s.pending = true; return [] }
            let w = Array(s.waiters.values)
            s.waiters.removeAll()
            return w
        }
        for w in waiters { w.resume() }
    }

    /// Returns when signalled (also before the call, since the last wait) or after `timeout`,
    /// whichever comes first, or when the task is canceled.
    public func wait(timeout: Duration) async {
        let id: UInt64? = state.withLock { s in
            if s.pending { s.pending = false; return nil }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.end(id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.pending { s.pending = false; return true }
                    if s.expired.remove(id) != nil { return true }
                    s.waiters[id] = c
                    return false
                }
                if now { c.resume() }
            }
        } onCancel: {
            end(id)
        }
        timer.cancel()
        state.withLock { _ = $0.expired.remove(id) }
    }

    /// Ends wait `id` (timeout or cancel).
    private func end(_ id: UInt64) {
        let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if let c = s.waiters.removeValue(forKey: id) { return c }
            s.expired.insert(id)
            return nil
        }
        c?.resume()
    }
}

/// What the daemon is doing now, for the heartbeat and `diffusionctl status`.
public struct DaemonActivity: Sendable, Equatable {
    public var status: String = "starting"
    public var activeJobID: Int64?
    public var imagesDone: Int = 0
    public var imagesTotal: Int = 0
    /// Images written in this run of the job, and when it began (for images/s).
    public var imagesThisRun: Int = 0
    public var runStarted: Double = 0
    /// The batch being sampled: its size and the steps done of its total.
    public var batch = BatchProgress(images: 0, completedSteps: 0, totalSteps: 0)
    /// Images of this run, counting the batch being sampled by its share of steps done
    /// (never decreasing: a batch sampled ahead starts before the last one is written).
    public var progressThisRun: Double = 0

    public init() {}

    /// Resets the counters for a run of a job that has `done` of its `total` images.
    public mutating func startRun(jobID: Int64, status: String, done: Int, total: Int, at started: Double) {
        self.status = status
        activeJobID = jobID
        imagesTotal = total
        imagesDone = done
        imagesThisRun = 0
        runStarted = started
        batch = BatchProgress(images: 0, completedSteps: 0, totalSteps: 0)
        progressThisRun = 0
    }

    /// After a run of a claim, whichever way it ended.
    public mutating func endRun() {
        status = "idle"
        activeJobID = nil
        imagesDone = 0
        imagesTotal = 0
        imagesThisRun = 0
    }

    /// After a step of the batch being sampled.
    public mutating func record(_ step: BatchProgress) {
        batch = step
        let share = step.totalSteps > 0 ? Double(step.images * step.completedSteps) / Double(step.totalSteps) : 0
        progressThisRun = min(Double(imagesTotal - imagesDone + imagesThisRun), max(progressThisRun, Double(imagesThisRun) + share))
    }

    /// After an image was written and recorded.
    public mutating func recordImage() {
        imagesDone += 1
        imagesThisRun += 1
        progressThisRun = max(progressThisRun, Double(imagesThisRun))
    }

    /// Images per second in this run, steps of the batch being sampled included.
    public var imagesPerSecond: Double {
        let dt = Date().timeIntervalSince1970 - runStarted
        return progressThisRun > 0 && dt > 0 ? progressThisRun / dt : 0
    }

    /// Seconds until the job's last image, at this run's pace (nil before the first step).
    public var etaSeconds: Double? {
        let rate = imagesPerSecond
        guard rate > 0 else { return nil }
        let left = Double(imagesTotal - imagesDone) - (progressThisRun - Double(imagesThisRun))
        return max(0, left) / rate
    }
}
