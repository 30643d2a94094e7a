import Foundation

/// A dedicated thread for long BLAS/oneDNN work, so that Swift's cooperative pool (two threads
/// here) stays free for signals, the spool and the heartbeat.
final class ComputeThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var work: [() -> Void] = []
    private var thread: Thread?

    init(name: String) {
        // A strong reference: the thread serves the object for the life of the process. With an
        // unowned one, a daemon that exits right after start (another daemon holds the lock) could
        // free the object before the thread first ran, and the thread crashed reading it.
        let t = Thread { self.loop() }
        t.name = name
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    private func loop() {
        while true {
            condition.lock()
            while work.isEmpty { condition.wait() }
            let next = work.removeFirst()
            condition.unlock()
            next()
        }
    }

    /// Runs `body` on the compute thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            condition.lock()
            work.append { continuation.resume(with: Result { try body() }) }
            condition.signal()
            condition.unlock()
        }
    }
}
