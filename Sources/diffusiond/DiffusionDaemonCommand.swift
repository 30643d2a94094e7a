import ArgumentParser
import DiffusionDaemon
import DiffusionEngine
import Foundation
import Logging

/// `diffusiond`: argument parsing and wiring only; the daemon lives in the DiffusionDaemon library.
@main
struct DiffusionDaemonCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diffusiond",
        abstract: "Batch image-generation daemon: watches a spool, samples images, records provenance.",
        version: DaemonVersion.string)

    @Option(name: .shortAndLong, help: ArgumentHelp(
        "The config file (YAML).",
        discussion: "Default: $DIFFUSIOND_CONFIG, else /etc/diffusiond/config.yml when it exists, else ./config.yml."))
    var config: String = DaemonConfig.defaultPath()

    @Flag(help: "Validate the config and exit.")
    var checkConfig = false

    mutating func run() async throws {
        Self.restartWithPassiveOpenMPIfNeeded()
        let cfg: DaemonConfig
        do {
            cfg = try DaemonConfig.load(path: config)
        } catch {
            FileHandle.standardError.write(Data("diffusiond: \(config): \(error)\n".utf8))
            throw ExitCode(78) // EX_CONFIG
        }
        if checkConfig {
            print("\(config): ok")
            return
        }
        let level = cfg.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "diffusiond")
        let generator = try makeGenerator(cfg, logger: logger)
        let daemon: Daemon
        do {
            daemon = try Daemon(configPath: config, config: cfg, generator: generator, logger: logger)
        } catch let error as DaemonLockError {
            logger.critical("\(error.description)")
            throw ExitCode(75) // EX_TEMPFAIL: the other daemon may stop
        }
        try await daemon.run()
    }

    /// oneDNN's OpenMP threads read OMP_WAIT_POLICY when the library loads; left unset, idle threads
    /// spin between kernels and starve everything else on a small machine (several times slower
    /// sampling when another process shares the cores). Restart once with "passive" unless set.
    static func restartWithPassiveOpenMPIfNeeded() {
        guard ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] == nil else { return }
        setenv("OMP_WAIT_POLICY", "passive", 1)
        let argv = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", argv)
    }

    /// The image generator: the diffusion engine, or the deterministic test generator when the
    /// config says `generator: test` or DIFFUSIOND_TEST_GENERATOR=1 (tests only).
    func makeGenerator(_ cfg: DaemonConfig, logger: Logger) throws -> any ImageGenerator {
        let env = ProcessInfo.processInfo.environment
        if cfg.generator == .test || env["DIFFUSIOND_TEST_GENERATOR"] == "1" {
            let ms = Int(env["DIFFUSIOND_TEST_DELAY_MS"] ?? "") ?? 0
            logger.warning("using the deterministic test generator (for tests only)")
            return DeterministicTestGenerator(delayPerImage: .milliseconds(ms))
        }
        let engine = EngineImageGenerator(modelsDirectory: cfg.models, cacheBytes: cfg.cacheMemoryMB << 20,
                                          threads: cfg.threads)
        let e = engine.environment
        logger.info("diffusion engine ready", metadata: [
            "blas_core": "\(e.details["blas_core"] ?? "?")", "openblas": "\(e.kernelVersions["openblas"] ?? "?")",
            "onednn": "\(e.kernelVersions["onednn"] ?? "?")", "threads": "\(cfg.threads)"])
        for warning in ComputeRuntime.environmentWarnings {
            logger.warning("\(warning)")
        }
        return engine
    }
}
