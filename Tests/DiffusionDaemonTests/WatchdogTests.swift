import DaemonTestSupport
import DiffusionDaemon
import Foundation
import Logging
import Provenance
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A generator that is busy for as long as `busy` is set (as a generator in
/// the middle of a long batch is): its `cachedModels()` does not return.
struct BusyGenerator: ImageGenerator {
    let busy: Locked<Bool>
    func generate(job: JobSpec, indices: [Int], context: GenerationContext) async throws -> [GeneratedImage] { [] }
    func modelHash(_ model: String) async throws -> String { "busy" }
    func cachedModels() async -> [String] {
        while busy.current { try? await Task.sleep(for: .milliseconds(20)) }
        return ["fashion-mnist"]
    }
    var environment: GeneratorEnvironment { GeneratorEnvironment(kernel: "test") }
}

@Suite struct WatchdogTests {
    @Test func pingsAtHalfTheIntervalWhileTheHeartbeatIsFresh() async throws {
        let dir = makeTempDir("watchdog")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let socket = try NotifySocket(address: dir + "/notify.sock")
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": dir + "/notify.sock"])
        let interval = SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "400000"])
        #expect(interval == .milliseconds(400))
        let lastBeat = Locked(ContinuousClock.now)
        let keepBeating = Task {
            while !Task.isCancelled {
                lastBeat.set(ContinuousClock.now)
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        let started = ContinuousClock.now
        let service = WatchdogService(notifier: notifier, interval: interval, lastBeat: lastBeat)
        let task = Task { try await service.run() }
        // Pings at once, then every 200 ms (half of 400 ms): the third comes
        // no sooner than 400 ms after the start (later on a loaded machine).
        var fresh: [String] = []
        while fresh.count < 3 && ContinuousClock.now - started < .seconds(20) {
            fresh += await socket.collect(for: .milliseconds(50))
        }
        let third = ContinuousClock.now - started
        #expect(fresh.count >= 3 && fresh.allSatisfy { $0 == "WATCHDOG=1" }, "\(fresh)")
        #expect(third >= .milliseconds(390), "three pings after \(third)")
        // A heartbeat that stops (a wedged database) stops the pings, so systemd restarts the daemon.
        keepBeating.cancel()
        _ = await keepBeating.result
        try? await Task.sleep(for: .seconds(1))
        _ = await socket.collect(for: .milliseconds(1))
        let stale = await socket.collect(for: .milliseconds(600))
        #expect(stale.isEmpty, "\(stale)")
        task.cancel()
        _ = await task.result
    }

    @Test func heartbeatKeepsBeatingWhileTheGeneratorIsBusy() async throws {
        let dir = makeTempDir("heartbeat")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try ProvenanceStore.inMemory()
        let busy = Locked(true)
        let runner = JobRunner(store: store, generator: BusyGenerator(busy: busy), config: DaemonConfig(),
                               spool: Spool(root: dir + "/spool"), logger: Logger(label: "test"))
        let longAgo = ContinuousClock.now - .seconds(3600)
        let lastBeat = Locked(longAgo)
        let service = HeartbeatService(store: store, runner: runner, notifier: SystemdNotifier(environment: [:]),
                                       interval: .milliseconds(50), lastBeat: lastBeat, logger: Logger(label: "test"))
        let task = Task { try await service.run() }
        // The generator stays busy: the heartbeat must be written anyway.
        var first: HeartbeatRow?
        let deadline = ContinuousClock.now + .seconds(20)
        while first == nil && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
            first = try store.heartbeat()
        }
        #expect(lastBeat.current > longAgo, "the heartbeat waited for the busy generator")
        #expect(try #require(first, "no heartbeat while the generator is busy").cachedModels.isEmpty)
        // Once the generator answers, the heartbeat carries its models.
        busy.set(false)
        var cached: [String] = []
        for _ in 0 ..< 400 where cached.isEmpty {
            try? await Task.sleep(for: .milliseconds(50))
            cached = try store.heartbeat()?.cachedModels ?? []
        }
        #expect(cached == ["fashion-mnist"])
        task.cancel()
        _ = await task.result
    }
}
