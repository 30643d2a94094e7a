import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Hosts as Linux network namespaces for the cluster fault tests: a database host and worker hosts,
/// each worker joined to the database host by a veth pair of its own (10.213.K.2 <-> 10.213.K.1),
/// plus one pair from the test process's own namespace (10.213.99.2 <-> 10.213.99.1), so the
/// test reaches the database whatever it does to the workers' links. Traffic between them is real
/// TCP through the kernel; `setLink` cuts and restores one worker's link. Needs root and
/// `ip netns`; `remove()` (and the process's exit) deletes every namespace and veth it made.
public final class NetworkLab: @unchecked Sendable {
    /// The namespace names' prefix: `dfdlab<pid>-`.
    public let prefix: String
    /// The database host's namespace.
    public var database: String { prefix + "db" }
    /// The worker hosts' namespaces, w1 ...
    public let workers: [String]
    private let lock = NSLock()
    private var made: [String] = []
    static let ip = "/usr/sbin/ip"

    /// Why a lab cannot be made here (not root, no `ip`, `ip netns add` refused), or nil when it can.
    public static let unavailableReason: String? = {
        guard getuid() == 0 else { return "not root: network namespaces need CAP_SYS_ADMIN" }
        guard FileManager.default.isExecutableFile(atPath: ip) else { return "no \(ip) (apt-get install iproute2)" }
        let probe = "dfdprobe\(getpid())"
        do {
            try run([ip, "netns", "add", probe])
            try run([ip, "netns", "del", probe])
            return nil
        } catch {
            return "cannot create a network namespace: \(error)"
        }
    }()

    /// True where a lab can be made (the condition of the cluster tests' `.enabled(if:)`).
    public static var isAvailable: Bool { unavailableReason == nil }

    /// The database host's address as worker `k` (1-based) reaches it.
    public static func databaseAddress(forWorker k: Int) -> String { "10.213.\(k).1" }
    /// The database host's address as the test process reaches it.
    public static let databaseAddressForTests = "10.213.99.1"
    /// The networks the database host accepts clients from.
    public static let clients = "10.213.0.0/16"

    /// Makes the database host and `workerCount` worker hosts, after removing what an earlier run
    /// that died left behind (namespaces of this prefix kind whose process is gone).
    public init(workerCount: Int) throws {
        prefix = "dfdlab\(getpid())-"
        workers = (1 ... workerCount).map { "dfdlab\(getpid())-w\($0)" }
        Self.removeLeftovers()
        do {
            try add(database)
            for (i, ns) in workers.enumerated() {
                try add(ns)
                try pair(index: i + 1, worker: ns)
            }
            try pair(index: 99, worker: nil)
        } catch {
            remove()
            throw error
        }
    }

    deinit { remove() }

    /// The command prefix that runs a program in namespace `ns`.
    public func exec(in ns: String) -> [String] { [Self.ip, "netns", "exec", ns] }

    /// Cuts (`up: false`) or restores worker `k`'s (1-based) link to the database host.
    public func setLink(worker k: Int, up: Bool) throws {
        try Self.run([Self.ip, "-n", workers[k - 1], "link", "set", "v\(k)w", up ? "up" : "down"])
    }

    /// Deletes every namespace made (their veths go with them); safe to call twice.
    public func remove() {
        lock.lock()
        let names = made
        made = []
        lock.unlock()
        for ns in names.reversed() { _ = try? Self.run([Self.ip, "netns", "del", ns]) }
        _ = try? Self.run([Self.ip, "link", "del", control])
    }

    /// The test process's end of its pair to the database host (in this namespace).
    var control: String { "dfd\(getpid())c" }

    private func add(_ ns: String) throws {
        try Self.run([Self.ip, "netns", "add", ns])
        lock.lock()
        made.append(ns)
        lock.unlock()
        try Self.run([Self.ip, "-n", ns, "link", "set", "lo", "up"])
    }

    /// A veth pair `v<k>d` (database host, 10.213.k.1) <-> `v<k>w` (the worker, or this namespace: 10.213.k.2).
    private func pair(index k: Int, worker ns: String?) throws {
        let d = "v\(k)d", w = ns == nil ? control : "v\(k)w"
        if let ns {
            try Self.run([Self.ip, "link", "add", d, "netns", database, "type", "veth", "peer", "name", w, "netns", ns])
            try Self.run([Self.ip, "-n", ns, "addr", "add", "10.213.\(k).2/24", "dev", w])
            try Self.run([Self.ip, "-n", ns, "link", "set", w, "up"])
        } else {
            _ = try? Self.run([Self.ip, "link", "del", w])
            try Self.run([Self.ip, "link", "add", d, "netns", database, "type", "veth", "peer", "name", w])
            try Self.run([Self.ip, "addr", "add", "10.213.\(k).2/24", "dev", w])
            try Self.run([Self.ip, "link", "set", w, "up"])
        }
        try Self.run([Self.ip, "-n", database, "addr", "add", "10.213.\(k).1/24", "dev", d])
        try Self.run([Self.ip, "-n", database, "link", "set", d, "up"])
    }

    /// Namespaces of an earlier lab whose process has exited.
    static func removeLeftovers() {
        guard let list = try? run([ip, "netns", "list"]) else { return }
        for line in list.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix("dfdlab"), let dash = name.firstIndex(of: "-"),
                  let pid = Int32(name[name.index(name.startIndex, offsetBy: 6) ..< dash]) else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH { _ = try? run([ip, "netns", "del", name]) }
        }
    }

    @discardableResult
    static func run(_ arguments: [String]) throws -> String { try PostgresTestServer.run(arguments) }
}
