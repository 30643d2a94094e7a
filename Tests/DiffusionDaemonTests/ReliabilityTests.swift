import DiffusionControl
import DiffusionDaemon
import Digests
import Foundation
import ImageCodecs
import Provenance
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Real processes under faults: a second daemon on the same directories, a
/// full output file system, a model file that does not match its manifest.
@Suite(.serialized) struct ReliabilityTests {
    /// Waits for a process to exit (at most `timeout` seconds); its status, or nil if it did not.
    static func exitStatus(_ p: Process, timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit(); return nil }
        return p.terminationStatus
    }

    @Test func aSecondDaemonOnTheSameDirectoriesRefusesToStart() throws {
        let h = try DaemonHarness(delayMs: 20)
        try h.start()
        let first = try #require(h.pid)

        // The same config: refused with an error naming the holder, status 75.
        let second = try h.launch(config: h.root + "/config.yml")
        #expect(Self.exitStatus(second, timeout: 30) == 75)
        #expect(h.log().contains("another diffusiond (pid \(first)) is already running on \(h.root)/state"), "\(h.log().suffix(2000))")

        // Only the spool shared (its own database and output): refused as well.
        try """
        spool: spool
        output: out2
        state: state2
        models: models
        default_model: fm
        generator: test
        """.write(toFile: h.root + "/other.yml", atomically: true, encoding: .utf8)
        let third = try h.launch(config: h.root + "/other.yml")
        #expect(Self.exitStatus(third, timeout: 30) == 75)
        #expect(h.log().contains("another diffusiond (pid \(first)) is already running on \(h.root)/spool"))
        #expect(!FileManager.default.fileExists(atPath: h.root + "/state2/diffusiond.sqlite"), "the refused daemon opened a database")

        // The first one is unaffected: every job once.
        for i in 0 ..< 3 { try h.drop("j\(i).yml", "name: j\(i)\nimages: 4\nseed: \(i)\n") }
        try h.waitFor("three jobs", timeout: 60) { (0 ..< 3).allSatisfy { h.exists("spool/done/j\($0).yml") } }

        // A SIGKILLed holder leaves its lock file behind but no lock: a restart takes over.
        #expect(h.signal(SIGKILL) != 0)
        #expect(h.exists("state/" + DaemonLock.fileName))
        try h.start()
        try h.drop("j3.yml", "name: j3\nimages: 2\nseed: 3\n")
        try h.waitFor("a job after the restart", timeout: 60) { h.exists("spool/done/j3.yml") }
        #expect(h.signal(SIGTERM) == 0)
        let store = try h.store()
        let jobs = try store.jobs()
        #expect(jobs.count == 4 && jobs.allSatisfy { $0.state == .done && $0.attempts == 1 })
        for job in jobs { #expect(try store.images(jobID: job.id).count == job.totalImages) }
    }

    @Test func theLockIsPerDirectoryAndReleasedWithTheHolder() throws {
        let dir = makeTempDir("lock")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/a", withIntermediateDirectories: true)
        var lock: DaemonLock? = try DaemonLock(directories: [dir + "/a", dir + "/a/", dir + "/a/../a"])
        #expect(lock?.paths == [dir + "/a/" + DaemonLock.fileName])
        do {
            _ = try DaemonLock(directories: [dir, dir + "/a"])
            Issue.record("took a held lock")
        } catch {
            #expect(error.holderPID == Int(getpid()))
            #expect(error.description.contains("another diffusiond (pid \(getpid())) is already running on \(dir)/a"))
        }
        // Nothing of the failed attempt stays held.
        #expect(throws: Never.self) { _ = try DaemonLock(directories: [dir]) }
        lock = nil
        #expect(throws: Never.self) { _ = try DaemonLock(directories: [dir + "/a"]) }
    }

    /// The output directory on a 256 KiB tmpfs that fills up mid-job: the job
    /// waits (status and log say why, naming the file), nothing partial is
    /// visible, the daemon keeps serving, and the job finishes by itself once
    /// the file system grows.
    @Test(.enabled(if: Self.canMountTmpfs, "mounting a tmpfs needs root with CAP_SYS_ADMIN (reported as skipped otherwise)"))
    func aFullOutputFileSystemMakesTheJobWaitThenResume() throws {
        let h = try DaemonHarness(delayMs: 0)
        let out = h.root + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        guard Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=256k,mode=0755", "diffusiond-test", out]) == 0 else {
            Issue.record("cannot mount a tmpfs at \(out), although a probe mount succeeded")
            return
        }
        defer {
            // Unmounted before the harness removes its folder.
            _ = Self.run("/bin/umount", ["-l", out])
            withExtendedLifetime(h) {}
        }
        try h.start()
        try h.drop("big.yml", "name: big\nclasses: [Trouser, Pullover]\nimages: 120\nseed: 77\n")
        let store = try h.store()
        try h.waitFor("the job to wait for space", timeout: 60) {
            (try? store.heartbeat()?.status.contains("no space left on device")) == true
        }
        let status = try StatusReport.build(store: store, lockDirectory: h.root + "/state")
        let line = status.daemon.status ?? ""
        #expect(line.contains("waiting") && line.contains(out + "/1-big/big-") && line.contains("retrying every"), "\(line)")
        #expect(status.render().contains("no space left on device"))
        #expect(h.log().contains("no space left on device: the job waits"))
        let job = try #require(try store.job(id: 1))
        #expect(job.state == .active)
        let recorded = try store.imageCount(jobID: 1)
        #expect(recorded > 0 && recorded < 120)

        // No partial image is visible: every visible file is complete and recorded.
        func checkVisibleFiles() throws {
            let rows = Dictionary(uniqueKeysWithValues: try store.images(jobID: 1).map { (($0.path as NSString).lastPathComponent, $0) })
            for name in try FileManager.default.contentsOfDirectory(atPath: out + "/1-big") where !name.hasPrefix(".") {
                let row = try #require(rows[name], "\(name) is visible without a row")
                #expect(SHA256Hex.of(try FileBytes.read(path: out + "/1-big/" + name)) == row.sha256, "\(name) is partial")
            }
        }
        try checkVisibleFiles()

        // Still serving: a bad job is rejected meanwhile, status answers.
        try h.drop("bad.yml", "images: 0\n")
        try h.waitFor("the bad job while waiting", timeout: 30) { h.exists("spool/failed/bad.yml.error") }
        sleep(6) // at least one retry that still fails
        #expect(try store.job(id: 1)?.state == .active)
        #expect(try store.imageCount(jobID: 1) == recorded)
        try checkVisibleFiles()

        // Space returns: the job resumes on its own and completes, identical images.
        #expect(Self.run("/bin/mount", ["-o", "remount,size=64m", out]) == 0)
        try h.waitFor("the job to resume and finish", timeout: 60) { h.exists("spool/done/big.yml") }
        #expect(h.log().contains("output writable again; job resumed"))
        #expect(h.signal(SIGTERM) == 0)
        let images = try store.images(jobID: 1)
        #expect(images.map(\.index) == Array(0 ..< 120))
        for row in images {
            let expected = DeterministicTestGenerator.image(seed: 77, index: row.index, classIndex: row.classIndex,
                                                            width: 28, height: 28, channels: 1)
            #expect(try ImageFile.read(path: row.path).image == expected.raster)
            #expect(SHA256Hex.of(try FileBytes.read(path: row.path)) == row.sha256)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/1-big").allSatisfy { !$0.hasPrefix(".") })
        #expect(try store.job(id: 1)?.attempts == 1)
    }

    /// A bundle whose weights do not match the SHA-256 in its model.json is
    /// refused with that reason (at preload and per job); the other models keep working.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: packageRoot + "/models/fashion-mnist/model.json")))
    func aModelFileThatDoesNotMatchItsManifestIsRefused() throws {
        let h = try DaemonHarness(delayMs: 0, engine: true, batchSize: 64, extraConfig: "preload: [broken]")
        let models = h.root + "/models-checked"
        try FileManager.default.createDirectory(atPath: models, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: models + "/fashion-mnist", withDestinationPath: packageRoot + "/models/fashion-mnist")
        try FileManager.default.copyItem(atPath: packageRoot + "/models/fashion-mnist", toPath: models + "/broken")
        // One flipped bit in the middle of the weights.
        let weights = models + "/broken/model.safetensors"
        var bytes = try FileBytes.read(path: weights)
        bytes[bytes.count / 2] ^= 0x10
        try AtomicFile.write(bytes, to: weights)
        var config = try String(contentsOfFile: h.root + "/config.yml", encoding: .utf8)
        config = config.replacingOccurrences(of: "models: \(packageRoot)/models", with: "models: \(models)")
        try config.write(toFile: h.root + "/config.yml", atomically: true, encoding: .utf8)

        try h.start()
        try h.drop("uses-broken.yml", "model: broken\nclasses: [Bag]\nimages: 1\nsampler: {kind: ddim, steps: 2}\nseed: 1\n")
        try h.waitFor("the job on the broken model", timeout: 120) { h.exists("spool/failed/uses-broken.yml.error") }
        try h.drop("uses-good.yml", "model: fashion-mnist\nclasses: [Bag]\nimages: 1\nsampler: {kind: ddim, steps: 2}\nseed: 1\n")
        try h.waitFor("the job on the good model", timeout: 120) { h.exists("spool/done/uses-good.yml") }
        #expect(h.process?.isRunning == true)
        #expect(h.signal(SIGTERM) == 0)

        let error = try String(contentsOfFile: h.root + "/spool/failed/uses-broken.yml.error", encoding: .utf8)
        #expect(error.contains("cannot load model broken: bundle file 'model.safetensors' has SHA-256 "), "\(error)")
        #expect(error.contains("model.json records "))
        #expect(h.log().contains("cannot preload model") && h.log().contains("has SHA-256"))
        let store = try h.store()
        #expect(try store.jobs(states: [.failed]).map(\.name) == ["uses-broken"])
        #expect(try store.images(jobID: 2).count == 1)
        #expect(try store.modelLoads().map(\.name) == ["fashion-mnist"])
    }

    /// A long queue must not slow `diffusionctl status` down: it lists the first 20 and counts the rest.
    @Test func statusListsTheHeadOfALongQueue() throws {
        let store = try ProvenanceStore.inMemory()
        for i in 0 ..< 500 {
            try store.insertJob(NewJob(name: "q\(i)", spoolName: "s\(i)", sourceName: "q\(i).yml", content: [], spec: "{}",
                                       state: .pending, priority: i == 300 ? 5 : 0, totalImages: 1))
        }
        let report = try StatusReport.build(store: store, lockDirectory: makeTempDir("nolock"))
        #expect(report.queueLength == 500 && report.queue.count == 20)
        #expect(report.queue.first?.name == "q300" && report.queue[1].name == "q0")
        #expect(report.render().contains("queue: 500 job(s) (the first 20 below)"))
        #expect(try store.claimNext(maxAttempts: 3, environmentID: nil).map { if case let .claimed(j) = $0 { j.name } else { "" } } == "q300")
    }

    /// True when this process can mount (and unmount) a tmpfs: root with CAP_SYS_ADMIN.
    static let canMountTmpfs: Bool = {
        guard getuid() == 0 else { return false }
        let probe = NSTemporaryDirectory() + "diffusiond-tmpfs-probe-\(getpid())"
        guard (try? FileManager.default.createDirectory(atPath: probe, withIntermediateDirectories: true)) != nil else { return false }
        defer { try? FileManager.default.removeItem(atPath: probe) }
        guard run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "diffusiond-probe", probe]) == 0 else { return false }
        return run("/bin/umount", [probe]) == 0
    }()

    @discardableResult
    static func run(_ tool: String, _ args: [String]) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        do { try p.run() } catch { return -1 }
        p.waitUntilExit()
        return p.terminationStatus
    }
}
