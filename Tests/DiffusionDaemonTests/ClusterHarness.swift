import DaemonTestSupport
import Digests
import Foundation
import ImageCodecs
import Provenance
import ProvenancePostgres
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The hosts of the cluster fault tests, made once per test process: three worker hosts and a
/// database host as network namespaces (`NetworkLab`), and a PostgreSQL server on the database host.
/// Removed (server stopped, namespaces deleted) when the process exits.
final class ClusterLab: Sendable {
    let lab: NetworkLab
    let server: PostgresTestServer

    static let shared: ClusterLab? = {
        guard NetworkLab.isAvailable else { return nil }
        do {
            let made = try ClusterLab()
            atexit { ClusterLab.shared?.close() }
            return made
        } catch {
            FileHandle.standardError.write(Data("cluster lab unavailable: \(error)\n".utf8))
            return nil
        }
    }()

    /// Why the cluster tests are skipped here.
    static var skipReason: Comment {
        Comment(rawValue: "network namespaces cannot be made here (\(NetworkLab.unavailableReason ?? "the lab or its PostgreSQL server did not start; see the test log"))")
    }

    init() throws {
        lab = try NetworkLab(workerCount: 3)
        do {
            server = try PostgresTestServer(listen: "*", launcher: lab.exec(in: lab.database), clients: NetworkLab.clients)
        } catch {
            lab.remove()
            throw error
        }
    }

    func close() {
        server.stop()
        lab.remove()
    }
}

/// One test's cluster: a fresh database, three worker daemons (each in its host's namespace, with its
/// own spool and state) sharing one output folder, on short leases.
final class Cluster {
    let lab: ClusterLab
    let root: String
    let database: String
    var processes: [Int: Process] = [:]
    static let shardImages = 8
    static let workerCount = 3

    init(delayMs: Int = 250) throws {
        lab = try #require(ClusterLab.shared)
        root = makeTempDir("cluster")
        database = try lab.server.createDatabase()
        self.delayMs = delayMs
        try TestGeneratorBundle.write(into: root + "/models")
        try "\(lab.server.password)\n".write(toFile: root + "/store-password", atomically: true, encoding: .utf8)
        for k in 1 ... Self.workerCount {
            try FileManager.default.createDirectory(atPath: root + "/w\(k)", withIntermediateDirectories: true)
            try """
            spool: w\(k)/spool
            output: out
            state: w\(k)/state
            models: models
            default_model: fm
            batch_size: 2
            threads: 1
            rescan_seconds: 1
            generator: test
            store: \(lab.server.url(database: database, host: NetworkLab.databaseAddress(forWorker: k)))
            store_password_file: store-password
            worker_name: w\(k)
            shards: {images: \(Self.shardImages), lease_seconds: 3, heartbeat_seconds: 0.5}
            """.write(toFile: root + "/w\(k).yml", atomically: true, encoding: .utf8)
        }
    }

    let delayMs: Int

    deinit {
        for (_, p) in processes where p.isRunning {
            kill(p.processIdentifier, SIGCONT)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// Starts worker `k` (1-based) in its host's namespace; its log goes to w<k>.log.
    func start(_ k: Int) throws {
        let p = Process()
        let command = lab.lab.exec(in: lab.lab.workers[k - 1]) + [daemonBinary(), "--config", root + "/w\(k).yml"]
        p.executableURL = URL(fileURLWithPath: command[0])
        p.arguments = Array(command.dropFirst())
        var env = ProcessInfo.processInfo.environment
        env["DIFFUSIOND_TEST_DELAY_MS"] = String(delayMs)
        env.removeValue(forKey: "DIFFUSIOND_TEST_GENERATOR")
        env.removeValue(forKey: "NOTIFY_SOCKET")
        p.environment = env
        let log = try appendingLog(root + "/w\(k).log")
        p.standardError = log
        p.standardOutput = log
        try p.run()
        processes[k] = p
        try waitFor("worker w\(k)'s heartbeat", timeout: 60) { (try? store().workers().contains { $0.worker == "w\(k)" && $0.pid == Int(p.processIdentifier) }) == true }
    }

    /// Sends `sig` to worker `k`; with SIGKILL also waits for it to exit.
    func signal(_ k: Int, _ sig: Int32) {
        guard let p = processes[k] else { return }
        kill(p.processIdentifier, sig)
        if sig == SIGKILL {
            p.waitUntilExit()
            processes[k] = nil
        }
    }

    /// The store as the test process reaches it (its own link to the database host).
    func store() throws -> PostgresJobStore {
        if let s = cachedStore { return s }
        let s = try PostgresJobStore.openClient(url: PostgresStoreURL.parse(lab.server.url(database: database, host: NetworkLab.databaseAddressForTests)),
                                                password: lab.server.password)
        cachedStore = s
        return s
    }
    private var cachedStore: PostgresJobStore?

    /// Drops a job file into worker `k`'s spool the careful way (a dotfile, then a rename).
    func drop(into k: Int, _ name: String, _ text: String) throws {
        let dir = root + "/w\(k)/spool/incoming"
        let temp = dir + "/.\(name).part"
        guard FileManager.default.createFile(atPath: temp, contents: Data(text.utf8)), rename(temp, dir + "/" + name) == 0 else {
            throw HarnessError("cannot drop \(name) into \(dir)")
        }
    }

    func log(_ k: Int) -> String { (try? String(contentsOfFile: root + "/w\(k).log", encoding: .utf8)) ?? "" }

    func waitFor(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            usleep(50_000)
        }
        let logs = (1 ... Self.workerCount).map { "--- w\($0)\n" + String(log($0).suffix(1500)) }.joined(separator: "\n")
        throw HarnessError("timed out waiting for \(what)\n\(logs)")
    }

    /// The job named `name`, once it is done.
    func waitForDone(_ name: String, timeout: Double = 120) throws -> JobRow {
        var found: JobRow?
        try waitFor("job \(name) to be done", timeout: timeout) {
            found = try store().jobs(states: [.done], limit: 100).first { $0.name == name }
            return found != nil
        }
        return found!
    }

    /// A worker holding a shard of `job` with some but not all of its images recorded: (worker
    /// number, the shard as the store holds it).
    func waitForWorkerMidShard(job name: String, timeout: Double = 60) throws -> (worker: Int, shard: ShardRow) {
        var hit: (Int, ShardRow)?
        try waitFor("a worker in the middle of a shard of \(name)", timeout: timeout) {
            guard let job = try store().jobs(states: [.active], limit: 100).first(where: { $0.name == name }) else { return false }
            let recorded = try store().recordedIndices(jobID: job.id)
            for shard in try store().shards(jobID: job.id) where shard.state == .leased {
                let done = (shard.firstIndex ..< shard.endIndex).filter(recorded.contains).count
                if done >= 1, done <= shard.endIndex - shard.firstIndex - 3, let w = shard.worker, let k = Int(w.dropFirst()) {
                    hit = (k, shard)
                    return true
                }
            }
            return false
        }
        return hit!
    }

    /// Waits until another worker has claimed `shard` again (a higher token); returns that lease.
    func waitForTakeover(of shard: ShardRow, timeout: Double = 60) throws -> LeaseRow {
        var taken: LeaseRow?
        try waitFor("another worker to take shard \(shard.shard) over", timeout: timeout) {
            taken = try store().leases(jobID: shard.jobID).first { $0.shard == shard.shard && $0.token > shard.token }
            return taken != nil
        }
        return taken!
    }
}

extension Cluster {
    /// Runs `diffusionctl` on worker `k`'s host (nil: the test process's) with `arguments`.
    func ctl(on k: Int?, _ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        try runCommand((k.map { lab.lab.exec(in: lab.lab.workers[$0 - 1]) } ?? []) + [diffusionctlPath] + arguments)
    }
}

/// The `diffusiond` beside the test binary (as `DaemonHarness` finds it).
func daemonBinary() -> String {
    let exeDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    let candidates = [exeDir + "/diffusiond", packageRoot + "/.build/debug/diffusiond", packageRoot + "/.build/release/diffusiond"]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
}
