import Foundation

/// A dedicated thread for long BLAS/oneDNN work, so that Swift's cooperative pool (two threads
/// here) stays free for signals, the spool and the heartbeat. The thread ends once its owner
/// shuts it down (or is released) and the work already queued has run.
final class ComputeThread: Sendable {
    /// The work queue the thread serves; the thread holds it, not the ComputeThread.
    private final class Queue: @unchecked Sendable {
        let condition = NSCondition()
        var work: [() -> Void] = []
        var stopping = false

        func loop() {
            while true {
                condition.lock()
                while work.isEmpty && !stopping { condition.wait() }
                if work.isEmpty { condition.unlock(); return }
                let next = work.removeFirst()
                condition.unlock()
                next()
            }
        }

        /// False once shut down.
        func enqueue(_ item: @escaping () -> Void) -> Bool {
            condition.lock()
            defer { condition.unlock() }
            guard !stopping else { return false }
            work.append(item)
            condition.signal()
            return true
        }

        func shutdown() {
            condition.lock()
            stopping = true
            condition.broadcast()
            condition.unlock()
        }
    }

    private let queue = Queue()

    init(name: String) {
        let q = queue
        let t = Thread { q.loop() }
        t.name = name
        t.stackSize = 8 << 20
        t.start()
    }

    deinit { queue.shutdown() }

    /// Lets the thread end once the queued work has run; later `run` calls throw `CancellationError`.
    func shutdown() { queue.shutdown() }

    /// Runs `body` on the compute thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let queued = queue.enqueue { continuation.resume(with: Result { try body() }) }
            if !queued { continuation.resume(throwing: CancellationError()) }
        }
    }
}
