import Foundation
import Logging
import Provenance
import ServiceLifecycle
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

/// Watches spool/incoming: inotify, a scan at start, and a periodic rescan; claims a
/// file once it is complete (`IncomingReadiness`), rescanning often while one waits.
public struct SpoolWatcherService: Service {
    let ingestor: SpoolIngestor
    let wakeRunner: Wakeup
    let rescanInterval: @Sendable () -> Duration
    let settleSeconds: @Sendable () -> Double
    let logger: Logger

    public init(ingestor: SpoolIngestor, wakeRunner: Wakeup, rescanInterval: @escaping @Sendable () -> Duration,
                settleSeconds: @escaping @Sendable () -> Double, logger: Logger) {
        self.ingestor = ingestor
        self.wakeRunner = wakeRunner
        self.rescanInterval = rescanInterval
        self.settleSeconds = settleSeconds
        self.logger = logger
    }

    public func run() async throws {
        // Add the watch first, then scan, so no file falls between the two.
        let watcher: InotifyWatcher?
        do {
            watcher = try InotifyWatcher(directory: ingestor.spool.incoming)
        } catch {
            logger.warning("inotify unavailable; relying on rescans", metadata: ["error": "\(error)"])
            watcher = nil
        }
        var readiness = IncomingReadiness(settleSeconds: settleSeconds())
        var scan = true
        var lastScan = ContinuousClock.now
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            if let watcher {
                let (events, overflow) = watcher.drain()
                if overflow { readiness.forget() }
                readiness.record(events)
                if overflow || events.contains(where: { !Spool.isIgnored($0.name) && $0.change != .gone }) { scan = true }
            }
            if ContinuousClock.now - lastScan >= (watcher == nil ? .seconds(1) : rescanInterval()) {
                scan = true
                // A job another worker of a shared store ended: its file leaves active/ here.
                ingestor.settleFinished()
            }
            if scan {
                lastScan = ContinuousClock.now
                readiness.settleSeconds = settleSeconds()
                let (jobs, waiting) = ingestor.ingestIncoming(readiness: readiness)
                if !jobs.isEmpty { wakeRunner.signal() }
                scan = waiting > 0
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
    }
}

/// Runs jobs as they arrive; on graceful shutdown stops at the next batch boundary.
public struct JobRunnerService: Service {
    let runner: JobRunner
    let wake: Wakeup
    let onShutdown: @Sendable () -> Void

    public init(runner: JobRunner, wake: Wakeup, onShutdown: @escaping @Sendable () -> Void = {}) {
        self.runner = runner
        self.wake = wake
        self.onShutdown = onShutdown
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            while !runner.isStopping {
                await runner.runAvailableJobs()
                if runner.isStopping { break }
                await wake.wait(timeout: .seconds(2))
            }
        } onGracefulShutdown: {
            onShutdown()
            runner.requestStop()
            wake.signal()
        }
    }
}

/// Every `shards.heartbeat_seconds` (1 s by default): renews the lease of the runner's claim, writes
/// this worker's row and the heartbeat row, and mirrors the status to systemd's STATUS=.
public struct HeartbeatService: Service {
    let store: any JobStore
    let runner: JobRunner
    let notifier: SystemdNotifier
    let interval: Duration
    let lastBeat: Locked<ContinuousClock.Instant>
    let logger: Logger
    /// This worker's name (`worker_name`) and how long a renewal extends its lease.
    let worker: String
    let leaseSeconds: Double

    public init(store: any JobStore, runner: JobRunner, notifier: SystemdNotifier, interval: Duration = .seconds(1),
                lastBeat: Locked<ContinuousClock.Instant>, logger: Logger,
                worker: String = DaemonConfig.defaultWorkerName, leaseSeconds: Double = DaemonConfig.Shards().leaseSeconds) {
        self.store = store
        self.runner = runner
        self.notifier = notifier
        self.interval = interval
        self.lastBeat = lastBeat
        self.logger = logger
        self.worker = worker
        self.leaseSeconds = leaseSeconds
    }

    public func run() async throws {
        let started = Date().timeIntervalSince1970
        var lastStatus = ""
        var lastLost: String?
        // The generator can be busy for a whole batch (longer than the
        // watchdog interval): ask it for its cached models on the side, so the
        // heartbeat, and the watchdog behind it, never wait for a batch to end.
        let cached = Locked<[String]>([])
        let refresher = Task { [runner, interval] in
            while !Task.isCancelled {
                let models = await runner.generator.cachedModels()
                cached.set(models)
                try? await Task.sleep(for: interval)
            }
        }
        defer { refresher.cancel() }
        for await _ in Ticks.every(interval).cancelOnGracefulShutdown() {
            beat(started: started, cached: cached.current, lastStatus: &lastStatus, lastLost: &lastLost, stopping: false)
        }
        beat(started: started, cached: cached.current, lastStatus: &lastStatus, lastLost: &lastLost, stopping: true)
    }

    func beat(started: Double, cached: [String], lastStatus: inout String, lastLost: inout String?, stopping: Bool) {
        if !runner.lease.renew(in: store, leaseSeconds: leaseSeconds), let claim = runner.lease.claim, claim.label != lastLost {
            logger.warning("lease lost (renewal refused, or none reached the store in time): another worker takes the shard over",
                           metadata: ["job": "\(claim.job.id)", "shard": "\(claim.shard)", "token": "\(claim.lease.token)"])
            lastLost = claim.label
        }
        let a = runner.activity.current
        let status = stopping ? "stopping" : a.status
        let active = a.activeJobID != nil
        let hb = HeartbeatRow(pid: Int(getpid()), startedAt: started, updatedAt: Date().timeIntervalSince1970,
                              status: status, activeJobID: a.activeJobID, imagesDone: a.imagesDone,
                              imagesTotal: a.imagesTotal, imagesPerSecond: a.imagesPerSecond, cachedModels: cached,
                              batchImages: active ? a.batch.images : 0, stepsDone: active ? a.batch.completedSteps : 0,
                              stepsTotal: active ? a.batch.totalSteps : 0, etaSeconds: active ? a.etaSeconds : nil)
        let claim = active ? runner.lease.claim : nil
        let row = WorkerRow(worker: worker, host: ProcessInfo.processInfo.hostName, pid: Int(getpid()), startedAt: started,
                            updatedAt: hb.updatedAt, status: status, cachedModels: cached, jobID: claim?.job.id,
                            shard: claim?.shard, firstIndex: claim?.indices.lowerBound, endIndex: claim?.indices.upperBound,
                            leaseToken: claim?.lease.token, imagesDone: a.imagesDone, imagesPerSecond: a.imagesPerSecond)
        do {
            try store.writeWorker(row)
            try store.writeHeartbeat(hb)
            lastBeat.set(ContinuousClock.now)
        } catch {
            logger.warning("cannot write heartbeat", metadata: ["error": "\(error)"])
        }
        var line = status
        if active { line += ": " + ProgressText.line(hb) }
        if line != lastStatus {
            notifier.status(line)
            lastStatus = line
        }
    }
}

/// Sends WATCHDOG=1 at half of WATCHDOG_USEC from its own task, as long as the
/// heartbeat keeps succeeding (so a wedged database or a stalled executor
/// lets systemd restart the daemon).
public struct WatchdogService: Service {
    let notifier: SystemdNotifier
    let interval: Duration?
    let lastBeat: Locked<ContinuousClock.Instant>

    public init(notifier: SystemdNotifier, interval: Duration?, lastBeat: Locked<ContinuousClock.Instant>) {
        self.notifier = notifier
        self.interval = interval
        self.lastBeat = lastBeat
    }

    public func run() async throws {
        guard let interval else {
            try? await gracefulShutdown()
            return
        }
        let half = interval / 2
        for await _ in Ticks.every(half).cancelOnGracefulShutdown() {
            if ContinuousClock.now - lastBeat.current < interval { notifier.watchdog() }
        }
    }
}

/// Reloads the config on SIGHUP; the queue lives in the database, so nothing is lost.
public struct ReloadService: Service {
    let reload: @Sendable () -> Void

    public init(reload: @escaping @Sendable () -> Void) { self.reload = reload }

    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals { reload() }
        }
    }
}

/// Wakes the runner when another process makes work in a shared store (PostgreSQL's LISTEN/NOTIFY):
/// a job from `diffusionctl submit --store` or another host's spool starts at once, not at the
/// runner's next poll. Returns at once on SQLite, whose spool wakes the runner itself.
public struct WorkNoticeService: Service {
    let store: any JobStore
    let wake: Wakeup

    public init(store: any JobStore, wake: Wakeup) {
        self.store = store
        self.wake = wake
    }

    public func run() async throws {
        let (store, wake) = (store, wake)
        try await cancelWhenGracefulShutdown {
            try await store.watchForWork { wake.signal() }
        }
        // A store without notices returns at once: stay until the group stops (a service that
        // returns would end the group).
        try? await gracefulShutdown()
    }
}
