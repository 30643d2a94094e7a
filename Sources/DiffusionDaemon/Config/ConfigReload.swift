import Foundation

extension DaemonConfig {
    /// The keys a SIGHUP reload does not apply: the folders, and what is fixed when the daemon
    /// starts (the generator's threads and model cache, the log level, the preloaded models, the store).
    public static let restartOnlyKeys = ["spool", "output", "state", "models", "threads", "cache_memory_mb", "log_level",
                                         "preload", "generator", "store", "store_password_file",
                                         "worker_name", "shards.lease_seconds", "shards.heartbeat_seconds"]

    /// The config a reload applies when `self` runs and `new` was read: `new`, with the keys of
    /// `restartOnlyKeys` kept as they are, and the names of those that changed (they need a restart).
    public func reloaded(with new: DaemonConfig) -> (applied: DaemonConfig, needRestart: [String]) {
        var applied = new
        var changed: [String] = []
        func keep<T: Equatable>(_ key: String, _ path: WritableKeyPath<DaemonConfig, T>) {
            if new[keyPath: path] != self[keyPath: path] { changed.append(key) }
            applied[keyPath: path] = self[keyPath: path]
        }
        keep("spool", \.spool)
        keep("output", \.output)
        keep("state", \.state)
        keep("models", \.models)
        keep("threads", \.threads)
        keep("cache_memory_mb", \.cacheMemoryMB)
        keep("log_level", \.logLevel)
        keep("preload", \.preload)
        keep("generator", \.generator)
        keep("store", \.store)
        keep("store_password_file", \.storePasswordFile)
        keep("worker_name", \.workerName)
        keep("shards.lease_seconds", \.shards.leaseSeconds)
        keep("shards.heartbeat_seconds", \.shards.heartbeatSeconds)
        return (applied, changed)
    }
}
