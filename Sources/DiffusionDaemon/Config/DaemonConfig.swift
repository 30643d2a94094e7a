import DiffusionEngine
import Foundation
import Logging
import Metrics
import Yams

/// `config.yml`: where things live and how hard to work. Every key is optional
/// (the defaults are below); an unknown key is an error that names it and its
/// line. Relative paths are taken relative to the config file's directory
/// (`config.yml` at the top of a checkout; `systemd/config.yml` is the one
/// `make install` puts in /etc/diffusiond).
///
/// ```yaml
/// spool: /var/spool/diffusiond        # incoming/ active/ done/ failed/ below it
/// output: /var/lib/diffusiond/output  # one folder per job
/// state: /var/lib/diffusiond/state    # diffusiond.sqlite (the provenance database) and the lock
/// store: sqlite                       # or postgresql://USER@HOST:PORT/DB, shared by several hosts
/// store_password_file: /etc/diffusiond/store-password   # else $DIFFUSIOND_STORE_PASSWORD
/// models: /usr/local/share/diffusiond/models
/// default_model: fashion-mnist
/// preload: [fashion-mnist]
/// cache_memory_mb: 2048
/// batch_size: 64
/// batch_across_jobs: true             # small jobs that sample alike share one batch
/// precision: fp32                     # jobs that name none; bf16 needs AMX or AVX512-BF16
/// threads: 2
/// limits: {images_per_job: 10000, steps: 1000, job_file_bytes: 65536, attempts: 3}
/// metrics: {enabled: true, features_model: fashion-mnist-features, min_images: 500}
/// log_level: info                     # trace debug info notice warning error critical
/// rescan_seconds: 60
/// settle_seconds: 2                   # a file with no close or rename seen must stay unchanged this long
/// worker_name: gpu-host-1             # this daemon among those sharing a store (default: the host name)
/// shards: {images: 64, lease_seconds: 30, heartbeat_seconds: 1}   # docs/scale-out.md
/// ```
public struct DaemonConfig: Sendable, Equatable {
    public var spool: String = "/var/spool/diffusiond"
    public var output: String = "/var/lib/diffusiond/output"
    public var state: String = "/var/lib/diffusiond/state"
    public var models: String = "/usr/local/share/diffusiond/models"
    public var defaultModel: String = "fashion-mnist"
    public var preload: [String] = []
    public var cacheMemoryMB: Int = 2048
    public var batchSize: Int = 64
    /// Small queued jobs that sample alike (model, sampler kind, steps, guidance kind) are sampled in
    /// one batch of up to `batchSize` images, each image bit-identical to its job run alone.
    public var batchAcrossJobs: Bool = true
    /// The precision of jobs that name none (`precision` in a job file overrides it).
    public var precision: ComputePrecision = .fp32
    public var threads: Int = 2
    public var limits = Limits()
    public var metrics = Metrics()
    public var logLevel: Logger.Level = .info
    public var rescanSeconds: Int = 60
    /// How long a file in incoming/ that no close or rename announced must stay unchanged before it is claimed.
    public var settleSeconds: Int = 2
    /// Selects the image generator. `engine` (the default) is the diffusion
    /// engine; `test` is `DeterministicTestGenerator`, for the daemon's own
    /// tests only (also selected by DIFFUSIOND_TEST_GENERATOR=1).
    public var generator: Generator = .engine
    /// The database of the record: the SQLite file under `state`, or a shared PostgreSQL database.
    public var store: StoreLocation = .sqlite
    /// The file whose first line is the PostgreSQL password (else $DIFFUSIOND_STORE_PASSWORD).
    public var storePasswordFile: String?
    /// This daemon's name among the workers that share a store: it names its leases, its heartbeat
    /// row and the images it records (the host name by default; one name per daemon).
    public var workerName: String = DaemonConfig.defaultWorkerName
    /// How jobs are cut into shards and how long a worker's lease on one holds.
    public var shards = Shards()

    /// The host name, as far as `worker_name` allows it (its first 64 allowed characters).
    public static var defaultWorkerName: String {
        let allowed = ProcessInfo.processInfo.hostName.unicodeScalars.filter {
            ("a" ... "z").contains($0) || ("A" ... "Z").contains($0) || ("0" ... "9").contains($0) || $0 == "." || $0 == "_" || $0 == "-"
        }
        let name = String(String.UnicodeScalarView(allowed.prefix(64))).trimmingCharacters(in: CharacterSet(charactersIn: ".-"))
        return name.isEmpty ? "localhost" : name
    }

    /// Shards and leases (docs/scale-out.md). A store on one host (SQLite) holds a whole job as one shard.
    public struct Shards: Sendable, Equatable {
        /// Images per shard of a job in a shared store.
        public var images: Int = 64
        /// How long a lease holds without a renewal: a worker silent this long loses its shard.
        public var leaseSeconds: Double = 30
        /// How often the heartbeat writes the worker's row and renews its lease.
        public var heartbeatSeconds: Double = 1

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case images, leaseSeconds = "lease_seconds", heartbeatSeconds = "heartbeat_seconds"
        }
    }

    /// The closed set of `generator` values.
    public enum Generator: String, Sendable, CaseIterable {
        case engine, test
    }

    public struct Limits: Sendable, Equatable {
        public var imagesPerJob: Int = 10_000
        public var steps: Int = 1000
        public var jobFileBytes: Int = 65_536
        /// Starts of a job that may end in a crash before it is failed as a poison job.
        public var attempts: Int = 3

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case imagesPerJob = "images_per_job", steps, jobFileBytes = "job_file_bytes", attempts
        }
    }

    public struct Metrics: Sendable, Equatable {
        public var enabled: Bool = true
        public var featuresModel: String = "fashion-mnist-features"
        /// Jobs with fewer images get no FID (biased like c/N and too noisy); KID and accuracy still.
        public var minImages: Int = QualityEvaluator.defaultMinimumImagesForFID

        public init() {}

        enum CodingKeys: String, CodingKey, CaseIterable {
            case enabled, featuresModel = "features_model", minImages = "min_images"
        }
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case spool, output, state, models, defaultModel = "default_model", preload, cacheMemoryMB = "cache_memory_mb"
        case batchSize = "batch_size", batchAcrossJobs = "batch_across_jobs", precision, threads, limits, metrics, logLevel = "log_level", rescanSeconds = "rescan_seconds"
        case settleSeconds = "settle_seconds"
        case generator, store, storePasswordFile = "store_password_file"
        case workerName = "worker_name", shards
    }

    public init() {}

    /// The `log_level` values, swift-log's levels.
    public static let logLevels = Logger.Level.allCases.map(\.rawValue)

    /// The provenance database.
    public var databasePath: String { (state as NSString).appendingPathComponent("diffusiond.sqlite") }

    public var spoolIncoming: String { (spool as NSString).appendingPathComponent("incoming") }
    public var spoolActive: String { (spool as NSString).appendingPathComponent("active") }
    public var spoolDone: String { (spool as NSString).appendingPathComponent("done") }
    public var spoolFailed: String { (spool as NSString).appendingPathComponent("failed") }

    /// Parses and validates config text. `baseDirectory` anchors relative paths.
    public static func parse(_ bytes: [UInt8], baseDirectory: String? = nil) throws(ValidationFailure) -> DaemonConfig {
        let root = try StrictYAML.load(bytes, limits: YAMLLimits(maxBytes: 1 << 20))
        var r = NodeReader()
        var c = DaemonConfig()
        guard let map = r.mapping(root, path: "", known: CodingKeys.allCases.map(\.rawValue)) else {
            throw ValidationFailure(r.errors)
        }
        func path(_ key: CodingKeys, _ into: inout String) {
            guard let n = map[key.rawValue], let s = r.string(n, path: key.rawValue) else { return }
            if s.isEmpty { r.fail(key.rawValue, "must not be empty", n); return }
            if s.unicodeScalars.contains(where: { $0.value < 0x20 }) { r.fail(key.rawValue, "must not contain control characters", n); return }
            if let base = baseDirectory, !s.hasPrefix("/") {
                into = ((base as NSString).appendingPathComponent(s) as NSString).standardizingPath
            } else {
                into = s
            }
        }
        path(.spool, &c.spool)
        path(.output, &c.output)
        path(.state, &c.state)
        path(.models, &c.models)
        if let n = map[CodingKeys.defaultModel.rawValue], let s = r.string(n, path: "default_model") {
            if let p = SafeName.problem(s) { r.fail("default_model", p, n) } else { c.defaultModel = s }
        }
        if let n = map[CodingKeys.preload.rawValue], let items = r.sequence(n, path: "preload") {
            c.preload = []
            for (i, item) in items.enumerated() {
                guard let s = r.string(item, path: "preload[\(i)]") else { continue }
                if let p = SafeName.problem(s) { r.fail("preload[\(i)]", p, item) } else { c.preload.append(s) }
            }
        }
        if let n = map["cache_memory_mb"], let v = r.int(n, path: "cache_memory_mb", range: 16 ... 1 << 20) { c.cacheMemoryMB = v }
        if let n = map["batch_size"], let v = r.int(n, path: "batch_size", range: 1 ... 4096) { c.batchSize = v }
        if let n = map["batch_across_jobs"], let v = r.bool(n, path: "batch_across_jobs") { c.batchAcrossJobs = v }
        if let n = map["precision"], let v = r.precision(n, path: "precision", cpu: .current) { c.precision = v }
        if let n = map["threads"], let v = r.int(n, path: "threads", range: 1 ... 1024) { c.threads = v }
        if let n = map["rescan_seconds"], let v = r.int(n, path: "rescan_seconds", range: 1 ... 86_400) { c.rescanSeconds = v }
        if let n = map["settle_seconds"], let v = r.int(n, path: "settle_seconds", range: 0 ... 3600) { c.settleSeconds = v }
        if let n = map["log_level"], let v = r.choice(n, path: "log_level", logLevels) { c.logLevel = Logger.Level(rawValue: v)! }
        if let n = map["generator"], let v = r.choice(n, path: "generator", Generator.allCases.map(\.rawValue)) { c.generator = Generator(rawValue: v)! }
        if let n = map["store"], let v = r.string(n, path: "store") {
            do { c.store = try StoreLocation.parse(v) } catch { r.fail("store", error.description, n) }
        }
        var passwordFile = ""
        path(.storePasswordFile, &passwordFile)
        if !passwordFile.isEmpty {
            if c.store == .sqlite {
                r.fail("store_password_file", "only a postgresql:// store takes a password", map["store_password_file"])
            } else {
                c.storePasswordFile = passwordFile
            }
        }
        if let n = map["limits"], let m = r.mapping(n, path: "limits", known: Limits.CodingKeys.allCases.map(\.rawValue)) {
            if let n = m["images_per_job"], let v = r.int(n, path: "limits.images_per_job", range: 1 ... 1_000_000) { c.limits.imagesPerJob = v }
            if let n = m["steps"], let v = r.int(n, path: "limits.steps", range: 1 ... 100_000) { c.limits.steps = v }
            if let n = m["job_file_bytes"], let v = r.int(n, path: "limits.job_file_bytes", range: 64 ... 16 << 20) { c.limits.jobFileBytes = v }
            if let n = m["attempts"], let v = r.int(n, path: "limits.attempts", range: 1 ... 100) { c.limits.attempts = v }
        }
        if let n = map["metrics"], let m = r.mapping(n, path: "metrics", known: Metrics.CodingKeys.allCases.map(\.rawValue)) {
            if let n = m["enabled"], let v = r.bool(n, path: "metrics.enabled") { c.metrics.enabled = v }
            if let n = m["features_model"], let v = r.string(n, path: "metrics.features_model") {
                if let p = SafeName.problem(v) { r.fail("metrics.features_model", p, n) } else { c.metrics.featuresModel = v }
            }
            if let n = m["min_images"], let v = r.int(n, path: "metrics.min_images", range: 1 ... 10_000_000) { c.metrics.minImages = v }
        }
        if let n = map["worker_name"], let v = r.string(n, path: "worker_name") {
            if let p = SafeName.problem(v) { r.fail("worker_name", p, n) } else { c.workerName = v }
        }
        if let n = map["shards"], let m = r.mapping(n, path: "shards", known: Shards.CodingKeys.allCases.map(\.rawValue)) {
            if let n = m["images"], let v = r.int(n, path: "shards.images", range: 1 ... 1_000_000) { c.shards.images = v }
            if let n = m["heartbeat_seconds"], let v = r.double(n, path: "shards.heartbeat_seconds", range: 0.05 ... 3600) {
                c.shards.heartbeatSeconds = v
            }
            if let n = m["lease_seconds"], let v = r.double(n, path: "shards.lease_seconds", range: 0.2 ... 86_400) {
                c.shards.leaseSeconds = v
            }
            if c.shards.leaseSeconds < 2 * c.shards.heartbeatSeconds {
                r.fail("shards.lease_seconds", "must be at least twice shards.heartbeat_seconds (\(c.shards.heartbeatSeconds)), "
                       + "or one late heartbeat loses the lease; got \(c.shards.leaseSeconds)", m["lease_seconds"] ?? n)
            }
        }
        if !r.errors.isEmpty { throw ValidationFailure(r.errors) }
        return c
    }

    /// Where `make install` puts the config of the system service.
    public static let installedPath = "/etc/diffusiond/config.yml"

    /// The config file to use when none is given: $DIFFUSIOND_CONFIG when set,
    /// else the installed one when it exists, else `config.yml` in the current
    /// directory (a checkout).
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment,
                                   fileExists: (String) -> Bool = { FileManager.default.fileExists(atPath: $0) }) -> String {
        if let path = environment["DIFFUSIOND_CONFIG"], !path.isEmpty { return path }
        if fileExists(installedPath) { return installedPath }
        return "config.yml"
    }

    /// Reads and parses a config file.
    public static func load(path: String) throws -> DaemonConfig {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ValidationFailure([FieldError("", "cannot read \(path): \(error.localizedDescription)")])
        }
        var full = (path as NSString).expandingTildeInPath
        if !full.hasPrefix("/") { full = FileManager.default.currentDirectoryPath + "/" + full }
        let base = (full as NSString).deletingLastPathComponent
        do {
            return try parse([UInt8](data), baseDirectory: base.isEmpty ? "." : base)
        } catch {
            throw error
        }
    }
}
