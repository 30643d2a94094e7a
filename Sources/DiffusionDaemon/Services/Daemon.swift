import Foundation
import ImageCodecs
import Logging
import Provenance
import ServiceLifecycle
import UnixSignals

/// The daemon assembled from a config and a generator: what `diffusiond` runs.
///
/// ```swift
/// let daemon = try Daemon(configPath: path, config: config, generator: engine, logger: logger)
/// try await daemon.run()   // until SIGTERM/SIGINT
/// ```
public final class Daemon: Sendable {
    /// The record: the SQLite file under `state` or the shared PostgreSQL database (`store`).
    public let store: any JobStore
    public let runner: JobRunner
    public let ingestor: SpoolIngestor
    public let spool: Spool
    let configPath: String?
    let config: Locked<DaemonConfig>
    let catalog: any ModelCatalog
    let notifier: SystemdNotifier
    let logger: Logger
    let wake = Wakeup()
    /// The exclusive hold on the spool, output and state directories (released at exit).
    let lock: DaemonLock

    public init(configPath: String?, config: DaemonConfig, generator: any ImageGenerator,
                catalog: (any ModelCatalog)? = nil, logger: Logger,
                notifier: SystemdNotifier = SystemdNotifier()) throws {
        self.configPath = configPath
        self.config = Locked(config)
        self.logger = logger
        self.notifier = notifier
        let catalog = catalog ?? DirectoryModelCatalog(root: config.models)
        self.catalog = catalog
        spool = Spool(root: config.spool)
        try spool.ensureDirectories()
        // The database holds every user's job files: owner only. The output is
        // for the group to read (UMask= narrows both further under systemd).
        try FileManager.default.createDirectory(atPath: config.state, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.createDirectory(atPath: config.output, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o750])
        // One daemon per spool and state directory, and per output folder on one host: a second one
        // stops here. Workers sharing a store share their output folder (docs/scale-out.md), which
        // must pass the probe instead.
        let shared = config.store != .sqlite
        if shared { try OutputFolderProbe.check(config.output, worker: config.workerName) }
        lock = try DaemonLock(directories: shared ? [config.state, config.spool] : [config.state, config.spool, config.output])
        store = try StoreOpener.open(config, as: .daemon, logger: logger)
        runner = JobRunner(store: store, generator: generator, config: config, spool: spool, logger: logger)
        ingestor = SpoolIngestor(spool: spool, store: store, validator: JobValidator(config: config, catalog: catalog), logger: logger)
    }

    /// Crash recovery, done once before the services start: interrupted jobs go
    /// back to the queue (or fail as poison jobs), files claimed but never
    /// recorded are recorded, and the environment is recorded.
    public func recover() throws {
        let (requeued, poisoned) = try store.recoverInterruptedJobs(maxAttempts: config.current.limits.attempts)
        if !requeued.isEmpty { logger.notice("interrupted jobs requeued", metadata: ["jobs": "\(requeued)"]) }
        // The shards this worker held when it died: pending again for any worker (or poison jobs).
        let poisonedShards = try store.releaseLeases(ofWorker: config.current.workerName, maxAttempts: config.current.limits.attempts)
        for id in poisoned + poisonedShards {
            logger.error("poison job failed", metadata: ["job": "\(id)"])
            if let job = try store.job(id: id) { _ = try? spool.fail(spoolName: job.spoolName, error: job.error ?? "poison job") }
        }
        ingestor.reconcileActive()
        // .error files are written to a temporary first; a crash can leave one behind.
        AtomicFile.removeTemporaries(in: spool.failed)
        try runner.recordEnvironment()
    }

    /// Loads the models named in `preload`, recording each load.
    public func preload() async {
        for name in config.current.preload {
            logger.info("loading model", metadata: ["model": "\(name)"])
            do {
                if let loaded = try await runner.generator.preload(model: name) {
                    try store.recordModelLoad(ModelLoadRow(name: loaded.name, contentHash: loaded.contentHash,
                                                           loadSeconds: loaded.loadSeconds, bytes: loaded.bytes))
                    logger.info("model loaded", metadata: ["model": "\(name)", "seconds": "\(loaded.loadSeconds)"])
                }
            } catch {
                logger.error("cannot preload model", metadata: ["model": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// Re-reads the config file. Batch size, limits, metrics settings and the rescan interval apply
    /// from the next batch or job; the keys of `DaemonConfig.restartOnlyKeys` (folders, threads,
    /// cache size, log level, preload, generator) need a restart: their changes are logged and not applied.
    public func reloadConfig() {
        guard let configPath else { return }
        notifier.reloading()
        defer { notifier.send("READY=1") }
        do {
            let new = try DaemonConfig.load(path: configPath)
            let (applied, needRestart) = config.current.reloaded(with: new)
            if !needRestart.isEmpty {
                logger.warning("config changes that need a restart were not applied; keeping the running values",
                               metadata: ["keys": "\(needRestart.joined(separator: ", "))"])
            }
            config.set(applied)
            runner.update(config: applied)
            ingestor.update(validator: JobValidator(config: applied, catalog: catalog))
            logger.notice("config reloaded", metadata: ["path": "\(configPath)"])
        } catch {
            logger.error("config reload failed; keeping the running config", metadata: ["error": "\(error)"])
        }
    }

    /// Runs until SIGTERM or SIGINT: recovery, preload, READY=1, then the services.
    public func run() async throws {
        try recover()
        runner.activity.withLock { $0.status = "loading models" }
        await preload()
        runner.activity.withLock { $0.status = "idle" }
        let lastBeat = Locked(ContinuousClock.now)
        let cfg = config.current
        let services: [any Service] = [
            HeartbeatService(store: store, runner: runner, notifier: notifier,
                             interval: .milliseconds(Int(cfg.shards.heartbeatSeconds * 1000)), lastBeat: lastBeat, logger: logger,
                             worker: cfg.workerName, leaseSeconds: cfg.shards.leaseSeconds),
            WatchdogService(notifier: notifier, interval: SystemdNotifier.watchdogInterval(), lastBeat: lastBeat),
            ReloadService(reload: { [self] in self.reloadConfig() }),
            SpoolWatcherService(ingestor: ingestor, wakeRunner: wake,
                                rescanInterval: { [config] in .seconds(config.current.rescanSeconds) },
                                settleSeconds: { [config] in Double(config.current.settleSeconds) }, logger: logger),
            JobRunnerService(runner: runner, wake: wake, onShutdown: { [notifier] in notifier.stopping() }),
            WorkNoticeService(store: store, wake: wake),
        ]
        var groupConfig = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint],
                                                    cancellationSignals: [], logger: logger)
        groupConfig.maximumGracefulShutdownDuration = .seconds(60)
        let group = ServiceGroup(configuration: groupConfig)
        notifier.ready(status: "ready: spool \(cfg.spool)")
        logger.info("diffusiond ready", metadata: ["spool": "\(cfg.spool)", "database": "\(StoreOpener.describe(cfg))",
                                                   "worker": "\(cfg.workerName)", "pid": "\(getpid())"])
        try await group.run()
        logger.info("diffusiond stopped")
    }
}
