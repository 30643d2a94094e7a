/// A tick now and then every `interval`, as an `AsyncStream` a service iterates with
/// `cancelOnGracefulShutdown()`, so that a shutdown ends the loop at once instead of after the
/// current sleep. A consumer slower than the clock sees one pending tick, not a burst.
enum Ticks {
    static func every(_ interval: Duration) -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let clock = Task {
            while !Task.isCancelled {
                continuation.yield()
                try? await Task.sleep(for: interval)
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in clock.cancel() }
        return stream
    }
}
