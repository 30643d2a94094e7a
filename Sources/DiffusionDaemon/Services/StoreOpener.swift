import Foundation
import Logging
import Provenance
import ProvenancePostgres

/// Opens the store a config names, for the daemon or for `diffusionctl`: the one place that
/// chooses between the SQLite file under `state` and a shared PostgreSQL database.
public enum StoreOpener {
    /// Who opens the store: the daemon applies migrations; a client requires them applied.
    public enum Role: Sendable {
        case daemon, client
    }

    /// The environment variable that holds the PostgreSQL password when no `store_password_file` is set.
    public static let passwordVariable = "DIFFUSIOND_STORE_PASSWORD"

    /// A password that cannot be read.
    public struct PasswordError: Error, CustomStringConvertible {
        public var description: String
    }

    /// Opens `config.store` as `role`.
    public static func open(_ config: DaemonConfig, as role: Role,
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            logger: Logger = Logger(label: "diffusiond.store")) throws -> any JobStore {
        switch config.store {
        case .sqlite:
            switch role {
            case .daemon: return try ProvenanceStore.openDaemon(path: config.databasePath)
            case .client: return try ProvenanceStore.openClient(path: config.databasePath)
            }
        case let .postgres(url):
            let password = try password(for: config, environment: environment)
            switch role {
            case .daemon: return try PostgresJobStore.openDaemon(url: url, password: password, logger: logger)
            case .client: return try PostgresJobStore.openClient(url: url, password: password, logger: logger)
            }
        }
    }

    /// The PostgreSQL password: the first line of `store_password_file`, else $DIFFUSIOND_STORE_PASSWORD,
    /// else none (trust or peer authentication).
    public static func password(for config: DaemonConfig, environment: [String: String]) throws -> String? {
        if let file = config.storePasswordFile {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw PasswordError(description: "store_password_file: cannot read \(file): \(error.localizedDescription)")
            }
            let line = text.split(separator: "\n", omittingEmptySubsequences: false).first.map(String.init) ?? ""
            guard !line.isEmpty else { throw PasswordError(description: "store_password_file: \(file) holds no password on its first line") }
            return line
        }
        if let value = environment[passwordVariable], !value.isEmpty { return value }
        return nil
    }

    /// What the logs name as the database: the SQLite file, or the URL (never with a password).
    public static func describe(_ config: DaemonConfig) -> String {
        switch config.store {
        case .sqlite: return config.databasePath
        case let .postgres(url): return url.description
        }
    }
}
