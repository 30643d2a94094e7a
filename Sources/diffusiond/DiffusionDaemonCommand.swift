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

    @Flag(help: "Print the compute kernels chosen for this CPU (JSON) and exit.")
    var showKernels = false

    mutating func run() async throws {
        KernelSelection.relaunchWithBestKernelsIfNeeded()
        if showKernels {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            print(String(decoding: try encoder.encode(KernelSelection.current), as: UTF8.self))
            return
        }
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
        } catch let error as OutputFolderProbe.Failure {
            logger.critical("\(error.description)")
            throw ExitCode(73) // EX_CANTCREAT
        }
        try await daemon.run()
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
            "onednn": "\(e.kernelVersions["onednn"] ?? "?")", "winograd": "\(e.kernelVersions["winograd"] ?? "?")",
            "threads": "\(cfg.threads)"])
        logger.info("compute kernels: \(KernelSelection.current.summary)")
        if let caution = ComputePrecision.bf16.speedCaution(on: .current) {
            if cfg.precision == .bf16 { logger.warning("\(caution)") } else { logger.info("\(caution)") }
        }
        for warning in ComputeRuntime.environmentWarnings {
            logger.warning("\(warning)")
        }
        return engine
    }
}
