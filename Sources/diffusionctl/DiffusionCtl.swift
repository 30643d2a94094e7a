import ArgumentParser
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

/// `diffusionctl`: argument parsing and wiring only. Reads the database
/// directly, so every read command works while the daemon is down.
@main
struct DiffusionCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diffusionctl",
        abstract: "Inspect and feed diffusiond.",
        version: DaemonVersion.string,
        subcommands: [Status.self, Jobs.self, Show.self, Submit.self, Validate.self, Cancel.self, Retry.self, Models.self, Verify.self,
                      MetricsCommand.self, ReferenceStats.self, GammaTable.self])

    struct Common: ParsableArguments {
        @Option(name: .shortAndLong, help: ArgumentHelp(
            "The daemon's config file.",
            discussion: "Default: $DIFFUSIOND_CONFIG, else /etc/diffusiond/config.yml when it exists, else ./config.yml."))
        var config: String = DaemonConfig.defaultPath()

        @Option(help: "The state directory (overrides the config's `state`).")
        var state: String?

        @Flag(help: "Print JSON instead of text.")
        var json = false

        func loadConfig() throws -> DaemonConfig {
            if FileManager.default.fileExists(atPath: config) || state == nil {
                do { return try DaemonConfig.load(path: config) } catch {
                    throw ValidationError("\(config): \(error)")
                }
            }
            return DaemonConfig()
        }

        /// The config with `--state` applied.
        func effectiveConfig() throws -> DaemonConfig {
            var cfg = try loadConfig()
            if let state { cfg.state = state }
            return cfg
        }

        /// The store the config names (`store`: the SQLite file under `state`, or PostgreSQL).
        /// Says on stderr that no daemon holds the lock of `state`, so `what` waits until one starts.
        func warnWhenNoDaemon(state: String, what: String) {
            guard DaemonLock.holder(in: state) == .free else { return }
            FileHandle.standardError.write(Data("diffusionctl: no diffusiond is running on \(state); \(what) until one starts (systemctl start diffusiond)\n".utf8))
        }

        func openStore() throws -> any JobStore {
            try StoreOpener.open(try effectiveConfig(), as: .client)
        }

        func emit<T: Encodable>(_ value: T, text: () -> String) throws {
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                enc.keyEncodingStrategy = .convertToSnakeCase
                print(String(decoding: try enc.encode(value), as: UTF8.self))
            } else {
                print(text())
            }
        }
    }
}
