import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL server for the store tests: Debian's postgresql 15 (`initdb`, `pg_ctl`),
/// run as the postgres user when the tests run as root, in a data directory under /tmp, listening
/// on a free TCP port of 127.0.0.1 with password (SCRAM) authentication. One server per test
/// process (`shared`), a fresh database per test (`createDatabase`); it is stopped and its
/// directory removed when the process exits.
public final class PostgresTestServer: Sendable {
    /// The superuser the tests connect as, and its password.
    public let user = "postgres"
    public let password = "diffusiond-test-password"
    /// The address the server listens on (the URLs' host).
    public let host: String
    public let port: Int
    /// The data directory (also the Unix socket directory).
    public let directory: String
    let binaries: String
    /// What runs the server's commands in another network namespace (`ip netns exec NS`), or nothing.
    let launcher: [String]

    /// The server of this test process, started at first use; nil (with `unavailableReason`) where it cannot start.
    public static let shared: PostgresTestServer? = {
        do {
            let server = try PostgresTestServer()
            atexit { PostgresTestServer.shared?.stop() }
            return server
        } catch {
            unavailableReasonBox.set("\(error)")
            FileHandle.standardError.write(Data("PostgreSQL test server unavailable: \(error)\n".utf8))
            return nil
        }
    }()

    /// True when `shared` runs (the condition of the PostgreSQL tests' `.enabled(if:)`).
    public static var isAvailable: Bool { shared != nil }

    /// Why `shared` is nil.
    public static var unavailableReason: String? { unavailableReasonBox.get() }
    static let unavailableReasonBox = ReasonBox()

    /// Why the server could not start.
    public struct StartError: Error, CustomStringConvertible {
        public var description: String
    }

    /// The server of `shared`: on 127.0.0.1 of this network namespace.
    convenience init() throws { try self.init(listen: "127.0.0.1", launcher: [], clients: nil) }

    /// A server listening on `listen` (an address of the namespace `launcher` enters, e.g.
    /// `["/usr/sbin/ip", "netns", "exec", "db"]`), also accepting password logins from `clients`
    /// (a CIDR, e.g. "10.213.0.0/16"). Stop it with `stop()`.
    public init(listen: String, launcher: [String], clients: String?) throws {
        host = listen
        self.launcher = launcher
        guard let bin = ["15", "16", "17", "14"].map({ "/usr/lib/postgresql/\($0)/bin" })
            .first(where: { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") }) else {
            throw StartError(description: "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
        }
        binaries = bin
        var template = Array("/tmp/diffusiond-pg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw StartError(description: "mkdtemp failed: errno \(errno)") }
        directory = String(cString: made)
        port = launcher.isEmpty ? try Self.freePort() : 5432
        if getuid() == 0 { try Self.run(["/bin/chown", "postgres:postgres", directory]) }
        let pwfile = directory + "/pwfile"
        try password.write(toFile: pwfile, atomically: false, encoding: .utf8)
        if getuid() == 0 { try Self.run(["/bin/chown", "postgres:postgres", pwfile]) }
        do {
            try asServerUser([bin + "/initdb", "-D", directory + "/data", "-U", user, "--pwfile=" + pwfile,
                              "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
            if let clients {
                let hba = FileHandle(forWritingAtPath: directory + "/data/pg_hba.conf")
                hba?.seekToEndOfFile()
                hba?.write(Data("host all all \(clients) scram-sha-256\n".utf8))
                try hba?.close()
            }
            try asServerUser([bin + "/pg_ctl", "-D", directory + "/data", "-l", directory + "/server.log", "-w", "-t", "120",
                              "-o", "-c listen_addresses=\(host == "*" ? "'*'" : host) -p \(port) -k \(directory) -c fsync=off -c max_connections=200",
                              "start"])
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// Creates an empty database and returns its name.
    public func createDatabase() throws -> String {
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try asServerUser([binaries + "/createdb", "-h", directory, "-p", String(port), "-U", user, name])
        return name
    }

    /// The store URL of `database` (the password goes apart).
    public func url(database: String) -> String { url(database: database, host: host) }

    /// The store URL of `database` as reached at `host` (one of the addresses the server listens on).
    public func url(database: String, host: String) -> String { "postgresql://\(user)@\(host):\(port)/\(database)" }

    /// Runs SQL as the superuser over the Unix socket (trust), returning what psql printed.
    @discardableResult
    public func psql(_ sql: String, database: String) throws -> String {
        try asServerUser([binaries + "/psql", "-h", directory, "-p", String(port), "-U", user, "-d", database, "-At", "-c", sql])
    }

    /// Restarts the server (a fast shutdown: sessions are cut, as in a failover), waiting until it accepts connections again.
    public func restart() throws {
        try asServerUser([binaries + "/pg_ctl", "-D", directory + "/data", "-m", "fast", "-w", "-t", "60", "restart"])
    }

    /// Stops the server and removes its directory.
    public func stop() {
        _ = try? asServerUser([binaries + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    @discardableResult
    func asServerUser(_ arguments: [String]) throws -> String {
        try Self.run(launcher + (getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--"] + arguments : arguments))
    }

    /// Runs `arguments` (posix_spawn and waitpid: the server that pg_ctl leaves running must not
    /// keep the caller waiting), returning its output.
    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let outputPath = NSTemporaryDirectory() + "diffusiond-pg-output-\(UUID().uuidString)"
        defer { unlink(outputPath) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        guard spawned == 0 else { throw StartError(description: "cannot run \(arguments[0]): errno \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        let exited = status & 0x7F == 0, code = (status >> 8) & 0xFF
        guard exited && code == 0 else {
            let how = exited ? "exited with \(code)" : "was killed by signal \(status & 0x7F)"
            throw StartError(description: "\(arguments.joined(separator: " ")) \(how): \(text)")
        }
        return text
    }

    /// A TCP port of 127.0.0.1 that nothing listens on now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw StartError(description: "socket failed: errno \(errno)") }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw StartError(description: "cannot bind 127.0.0.1:0: errno \(errno)") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

/// A string set once from any thread.
final class ReasonBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: String?
    func set(_ v: String) { lock.lock(); value = v; lock.unlock() }
    func get() -> String? { lock.lock(); defer { lock.unlock() }; return value }
}
