import ArgumentParser
import DiffusionDaemon
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
        let level = Logger.Level(rawValue: cfg.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "diffusiond")
        let generator = try makeGenerator(cfg, logger: logger)
        let daemon = try Daemon(configPath: config, config: cfg, generator: generator, logger: logger)
        try await daemon.run()
    }

    /// The image generator. Until the engine is wired in, only the test generator exists.
    func makeGenerator(_ cfg: DaemonConfig, logger: Logger) throws -> any ImageGenerator {
        let env = ProcessInfo.processInfo.environment
        if cfg.generator == "test" || env["DIFFUSIOND_TEST_GENERATOR"] == "1" {
            let ms = Int(env["DIFFUSIOND_TEST_DELAY_MS"] ?? "") ?? 0
            logger.warning("using the deterministic test generator (for tests only)")
            return DeterministicTestGenerator(delayPerImage: .milliseconds(ms))
        }
        FileHandle.standardError.write(Data("diffusiond: no diffusion engine is linked into this build\n".utf8))
        throw ExitCode(69) // EX_UNAVAILABLE
    }
}
