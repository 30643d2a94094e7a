// The daemon stage's fixture: the real diffusiond on a private config, with a notify socket.
import DaemonTestSupport
import DiffusionDaemon
import DiffusionEngine
import Foundation
import ImageCodecs
import ModelBundles
import Provenance
#if canImport(Glibc)
import Glibc
#endif

/// diffusiond started on a private config, with our notify socket.
final class DaemonUnderTest {
    let root: String
    let configPath: String
    let bin: String
    let process = Process()
    let notify: NotifySocket
    let started: Double
    var store: ProvenanceStore?

    var pid: Int32 { process.processIdentifier }

    init(bin: String, root: String, models: String, preload: [String], extraConfig: String = "") throws {
        self.bin = bin
        self.root = root
        let fm = FileManager.default
        try? fm.removeItem(atPath: root)
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        configPath = root + "/config.yml"
        let config = """
            # diffusion-bench: a private daemon on the checkout's models
            spool: spool
            output: output
            state: state
            models: \(models)
            default_model: fashion-mnist
            preload: [\(preload.joined(separator: ", "))]
            cache_memory_mb: 2048
            batch_size: 64
            threads: 2
            log_level: info
            \(extraConfig)
            """
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        notify = try NotifySocket(address: "/tmp/diffusion-bench-\(getpid())-\((root as NSString).lastPathComponent).notify")
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = notify.address
        env["OMP_WAIT_POLICY"] = "passive"
        env[KernelSelection.markerVariable] = nil  // the daemon chooses its kernels itself
        env["DIFFUSIOND_TEST_GENERATOR"] = nil
        env["DIFFUSIOND_CONFIG"] = nil
        process.executableURL = URL(fileURLWithPath: bin + "/diffusiond")
        process.arguments = ["--config", configPath]
        process.environment = env
        _ = fm.createFile(atPath: root + "/daemon.log", contents: nil)
        let logHandle = FileHandle(forWritingAtPath: root + "/daemon.log")
        process.standardOutput = logHandle
        process.standardError = logHandle
        started = seconds()
        try process.run()
    }

    var configText: String { (try? String(contentsOfFile: configPath, encoding: .utf8)) ?? "" }

    /// Seconds from process start to READY=1.
    /// `openStore: false` leaves the database alone (an older daemon's, whose schema this build may not read).
    func waitReady(timeout: Double = 300, openStore: Bool = true) throws -> Double {
        while seconds() - started < timeout {
            guard process.isRunning else { throw BenchError("diffusiond exited (status \(process.terminationStatus)) before READY=1; log: \(root)/daemon.log") }
            if let message = notify.receive(timeout: 0.5), message.split(separator: "\n").contains("READY=1") {
                let ready = seconds() - started
                if openStore { store = try ProvenanceStore.openClient(path: root + "/state/diffusiond.sqlite") }
                return ready
            }
        }
        throw BenchError("no READY=1 from diffusiond within \(Int(timeout)) s; log: \(root)/daemon.log")
    }

    var memory: ProcessMemory? { ProcessMemory.read(pid: pid) }

    func modelLoads() throws -> [ModelLoadTiming] {
        try (store?.modelLoads() ?? []).reversed().map { ModelLoadTiming(name: $0.name, loadSeconds: $0.loadSeconds, bytes: $0.bytes) }
    }

    /// Submits `yaml` with diffusionctl and waits for the job to finish; `whileWaiting` runs every 0.1 s.
    func run(job yaml: String, name: String, timeout: Double = 1800, whileWaiting: () -> Void = {}) throws -> JobTiming {
        let file = root + "/\(name).yml"
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        let submitted = wallClock()
        let r = try runProgram(bin + "/diffusionctl", ["submit", "--config", configPath, file], stderrPath: root + "/diffusionctl.log")
        guard r.status == 0 else { throw BenchError("diffusionctl submit \(file) failed (status \(r.status)); see \(root)/diffusionctl.log") }
        let t0 = seconds()
        while seconds() - t0 < timeout {
            whileWaiting()
            guard process.isRunning else { throw BenchError("diffusiond exited during job \(name); log: \(root)/daemon.log") }
            if let job = try store?.jobs(limit: 50).first(where: { $0.name == name }), job.state.isFinal {
                guard job.state == .done else { throw BenchError("job \(name) \(job.state.rawValue): \(job.error ?? "")") }
                let finished = job.finishedAt ?? wallClock(), started = job.startedAt ?? job.createdAt
                return JobTiming(name: name, jobId: job.id, state: job.state.rawValue, images: job.totalImages,
                                 submitToDoneSeconds: finished - submitted, submitToIngestSeconds: job.createdAt - submitted,
                                 ingestToStartSeconds: started - job.createdAt, runSeconds: finished - started)
            }
            usleep(100_000)
        }
        throw BenchError("job \(name) not done after \(Int(timeout)) s")
    }

    /// The cached models of the latest heartbeat.
    func cachedModels() -> [String] { (try? store?.heartbeat())??.cachedModels ?? [] }

    /// SIGTERM and wait.
    func stop() {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let t0 = seconds()
        while process.isRunning && seconds() - t0 < 90 { usleep(50_000) }
        if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() }
    }
}
