import PostgresNIO

/// An error of the PostgreSQL server or of the connection to it, with what the server said
/// (PostgresNIO's own errors print no details, so as not to leak data into logs).
public struct PostgresStoreError: Error, CustomStringConvertible, Sendable {
    /// The SQLSTATE the server sent, when it sent one.
    public var sqlState: String?
    public var description: String
    /// True when the connection was lost or could not be made: the call may succeed when tried again.
    public var isUnavailable = false

    /// The SQLSTATE of disk_full.
    public static let diskFull = "53100"

    /// An error from its parts.
    public init(sqlState: String?, description: String) {
        self.sqlState = sqlState
        self.description = description
    }

    init(connecting url: PostgresStoreURL, _ error: any Error) {
        let inner = Self.describing(error)
        self.init(sqlState: inner.sqlState, description: "cannot connect to the store \(url): \(inner.description)")
        isUnavailable = true
    }

    /// A thrown error of a connection that dropped, as this type, marked unavailable.
    static func connectionLost(_ error: any Error) -> any Error {
        if !(error is PSQLError) && !(error is PostgresStoreError) { return error }
        var lost = describing(error)
        lost.isUnavailable = true
        return lost
    }

    /// A thrown error as this type; the store's own errors (ProvenanceError) pass through unchanged.
    static func passingThrough(_ error: any Error) -> any Error {
        guard error is PSQLError else { return error }
        return describing(error)
    }

    /// What `error` says, as this type.
    static func describing(_ error: any Error) -> PostgresStoreError {
        if let mine = error as? PostgresStoreError { return mine }
        guard let psql = error as? PSQLError else { return PostgresStoreError(sqlState: nil, description: "\(error)") }
        if let info = psql.serverInfo {
            let state = info[.sqlState]
            var text = info[.message] ?? "server error"
            if let detail = info[.detail] { text += " (\(detail))" }
            if let state { text += " [SQLSTATE \(state)]" }
            return PostgresStoreError(sqlState: state, description: text)
        }
        var text = "\(psql.code)"
        if let underlying = psql.underlying { text += ": \(underlying)" }
        return PostgresStoreError(sqlState: nil, description: text)
    }

    /// True when `error` means the connection is gone (closed by the server, reset, refused).
    static func isConnectionLoss(_ error: any Error) -> Bool {
        guard let psql = error as? PSQLError else { return false }
        if psql.serverInfo?[.sqlState]?.hasPrefix("08") == true { return true } // connection_exception
        if psql.serverInfo?[.sqlState] == "57P01" { return true } // admin_shutdown (pg_terminate_backend)
        return [PSQLError.Code.serverClosedConnection, .connectionError, .uncleanShutdown].contains(psql.code)
    }
}
