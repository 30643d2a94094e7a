import ProvenancePostgres

/// Which database holds the record (config key `store`): `sqlite`, the embedded SQLite file
/// `diffusiond.sqlite` under `state` (the default), or a PostgreSQL database that daemons on
/// several hosts share, `postgresql://USER@HOST:PORT/DB` (docs/scale-out.md).
public enum StoreLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite
    case postgres(PostgresStoreURL)

    /// The config text: `sqlite` or the URL (which never holds a password).
    public var description: String {
        switch self {
        case .sqlite: return "sqlite"
        case let .postgres(url): return url.description
        }
    }

    /// Parses the value of `store`; the problem says what is wrong without repeating the value.
    public static func parse(_ text: String) throws(PostgresStoreURL.Problem) -> StoreLocation {
        if text == "sqlite" { return .sqlite }
        return .postgres(try PostgresStoreURL.parse(text))
    }
}
