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
/// threads: 2
/// limits: {images_per_job: 10000, steps: 1000, job_file_bytes: 65536, attempts: 3}
/// metrics: {enabled: true, features_model: fashion-mnist-features, min_images: 500}
/// log_level: info                     # trace debug info notice warning error critical
/// rescan_seconds: 60
/// settle_seconds: 2                   # a file with no close or rename seen must stay unchanged this long
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
        case batchSize = "batch_size", threads, limits, metrics, logLevel = "log_level", rescanSeconds = "rescan_seconds"
        case settleSeconds = "settle_seconds"
        case generator, store, storePasswordFile = "store_password_file"
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
