import Foundation

/// Where a PostgreSQL store lives: `postgresql://USER@HOST:PORT/DB` (port 5432 when left out).
/// The password never comes from the URL; a URL that carries one is refused.
public struct PostgresStoreURL: Sendable, Equatable, CustomStringConvertible {
    public var user: String
    public var host: String
    public var port: Int
    public var database: String

    /// A store location from its parts.
    public init(user: String, host: String, port: Int = 5432, database: String) {
        self.user = user
        self.host = host
        self.port = port
        self.database = database
    }

    /// Why `text` is not a usable store URL.
    public struct Problem: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// The URL written the way the config takes it (no password: safe to log).
    public var description: String { "postgresql://\(user)@\(host):\(port)/\(database)" }

    /// True when `text` names a PostgreSQL store (whether or not it is a valid one).
    public static func looksLikePostgres(_ text: String) -> Bool {
        text.hasPrefix("postgresql://") || text.hasPrefix("postgres://")
    }

    /// Parses `postgresql://USER@HOST[:PORT]/DB`; the problem names what is wrong.
    public static func parse(_ text: String) throws(Problem) -> PostgresStoreURL {
        guard looksLikePostgres(text), let parts = URLComponents(string: text) else {
            throw Problem(description: "must be `sqlite` or postgresql://USER@HOST:PORT/DB")
        }
        if parts.password != nil {
            throw Problem(description: "must not carry a password; put it in store_password_file or DIFFUSIOND_STORE_PASSWORD")
        }
        guard let user = parts.user, !user.isEmpty else {
            throw Problem(description: "names no user (postgresql://USER@HOST:PORT/DB)")
        }
        guard let host = parts.host, !host.isEmpty else {
            throw Problem(description: "names no host (postgresql://USER@HOST:PORT/DB)")
        }
        let port = parts.port ?? 5432
        guard (1 ... 65535).contains(port) else { throw Problem(description: "port \(port) is not in 1 ... 65535") }
        let database = String(parts.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else {
            throw Problem(description: "names no database (postgresql://USER@HOST:PORT/DB)")
        }
        guard parts.query == nil, parts.fragment == nil else {
            throw Problem(description: "takes no options after the database name")
        }
        return PostgresStoreURL(user: user.removingPercentEncoding ?? user, host: host, port: port,
                                database: database.removingPercentEncoding ?? database)
    }
}
