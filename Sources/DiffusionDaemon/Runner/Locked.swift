import Foundation

/// A value behind a lock, shareable across tasks and threads.
public final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }

    public var current: Value { withLock { $0 } }

    public func set(_ newValue: Value) { withLock { $0 = newValue } }
}

/// Wakes a sleeping loop early (new job files, shutdown).
public final class Wakeup: Sendable {
    private let pending = Locked(false)

    public init() {}

    public func signal() { pending.set(true) }

    /// Returns when signalled or after `timeout`, whichever comes first.
    public func wait(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if pending.withLock({ let p = $0; $0 = false; return p }) { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
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

    public init() {}

    public var imagesPerSecond: Double {
        let dt = Date().timeIntervalSince1970 - runStarted
        return imagesThisRun > 0 && dt > 0 ? Double(imagesThisRun) / dt : 0
    }
}
