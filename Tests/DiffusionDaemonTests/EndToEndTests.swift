import DaemonTestSupport
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

/// Runs the real `diffusiond` binary on a temporary spool, with the
/// deterministic test generator or (`engine: true`) the diffusion engine on the
/// shipped bundles in models/.
final class DaemonHarness {
    let root: String
    var process: Process?
    let binary: String

    /// `fashionStubs`: models/ holds model.json stubs of the shipped fashion-mnist bundles (the
    /// catalog the validator tests use) instead of the small "fm" one; `extraConfig` is appended to config.yml.
    init(delayMs: Int, engine: Bool = false, batchSize: Int = 2, fashionStubs: Bool = false, extraConfig: String = "") throws {
        root = makeTempDir("e2e")
        let exeDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        let candidates = [exeDir + "/diffusiond", packageRoot + "/.build/debug/diffusiond", packageRoot + "/.build/release/diffusiond"]
        binary = candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
        try TestGeneratorBundle.write(into: root + "/models")
        if fashionStubs {
            for (name, kind) in [("fashion-mnist", "unet"), ("fashion-mnist-classifier", "classifier")] {
                try FileManager.default.createDirectory(atPath: root + "/models/" + name, withIntermediateDirectories: true)
                let classes = fashionClasses.map { "\"\($0)\"" }.joined(separator: ", ")
                try """
                {"format": "diffusiond-bundle/1", "name": "\(name)", "kind": "\(kind)", "classes": [\(classes)],
                 \(kind == "unet" ? "\"null_class\": 10, \"diffusion\": {\"steps\": 1000, \"variance\": \"learned_range\"}," : "")
                 "data": {"height": 28, "width": 28, "channels": 1}}
                """.write(toFile: root + "/models/\(name)/model.json", atomically: true, encoding: .utf8)
            }
        }
        self.delayMs = delayMs
        self.engine = engine
        self.defaultModel = engine || fashionStubs ? "fashion-mnist" : "fm"
        self.extraConfig = extraConfig
        try writeConfig(batchSize: batchSize)
    }

    let engine: Bool
    let defaultModel: String
    /// Set in the daemon's environment at its next start (NOTIFY_SOCKET, ...).
    var extraEnvironment: [String: String] = [:]
    let extraConfig: String
    var pid: Int32? { process?.processIdentifier }

    /// (Re)writes config.yml; the daemon reads it at start.
    func writeConfig(batchSize: Int) throws {
        try """
        spool: spool
        output: out
        state: state
        models: \(engine ? packageRoot + "/models" : "models")
        default_model: \(defaultModel)
        batch_size: \(batchSize)
        threads: 1
        rescan_seconds: 1
        generator: \(engine ? "engine" : "test")
        \(extraConfig)
        """.write(toFile: root + "/config.yml", atomically: true, encoding: .utf8)
    }

    let delayMs: Int

    func start() throws {
        process = try launch(config: root + "/config.yml")
        try waitFor("the database", timeout: 30) { FileManager.default.fileExists(atPath: self.root + "/state/diffusiond.sqlite") }
        try waitFor("the spool", timeout: 10) { FileManager.default.fileExists(atPath: self.root + "/spool/incoming") }
        // The file exists before its migrations are applied.
        try waitFor("the database schema", timeout: 30) { (try? self.store()) != nil }
    }

    /// Starts a diffusiond on `config` (its stderr appended to daemon.log) without waiting for it.
    func launch(config: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["--config", config]
        var env = ProcessInfo.processInfo.environment
        env["DIFFUSIOND_TEST_DELAY_MS"] = String(delayMs)
        env.removeValue(forKey: "DIFFUSIOND_TEST_GENERATOR")
        env.removeValue(forKey: "NOTIFY_SOCKET")
        env.merge(extraEnvironment) { $1 }
        p.environment = env
        let log = try appendingLog(root + "/daemon.log")
        p.standardError = log
        p.standardOutput = log
        try p.run()
        return p
    }

    func signal(_ sig: Int32) -> Int32 {
        guard let p = process else { return -1 }
        kill(p.processIdentifier, sig)
        p.waitUntilExit()
        process = nil
        return p.terminationStatus
    }

    func drop(_ name: String, _ text: String) throws {
        try drop(name, bytes: Array(text.utf8))
    }

    /// The way a careful writer does it: a dotfile, then a rename.
    func drop(_ name: String, bytes: [UInt8]) throws {
        let temp = root + "/spool/incoming/.\(name).part"
        guard FileManager.default.createFile(atPath: temp, contents: Data(bytes)) else { throw HarnessError("cannot write \(temp)") }
        guard rename(temp, root + "/spool/incoming/\(name)") == 0 else { throw HarnessError("cannot rename \(temp)") }
    }

    func log() -> String { (try? String(contentsOfFile: root + "/daemon.log", encoding: .utf8)) ?? "" }

    func waitFor(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            usleep(50_000)
        }
        let log = (try? String(contentsOfFile: root + "/daemon.log", encoding: .utf8)) ?? ""
        throw HarnessError("timed out waiting for \(what)\n\(log.suffix(3000))")
    }

    func exists(_ rel: String) -> Bool { FileManager.default.fileExists(atPath: root + "/" + rel) }

    func store() throws -> ProvenanceStore { try ProvenanceStore.openClient(path: root + "/state/diffusiond.sqlite") }

    deinit {
        if let p = process, p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: root)
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

@Suite(.serialized) struct EndToEndTests {
    static let job = """
    name: NAME
    classes: [Trouser, 0, Pullover]
    images_per_class: 6
    sampler: {kind: ddim, steps: 10}
    seed: 4242
    """

    @Test func killedMidJobResumesToBitIdenticalImages() throws {
        let h = try DaemonHarness(delayMs: 60)
        try h.start()
        try h.drop("whole.yml", Self.job.replacingOccurrences(of: "NAME", with: "whole"))
        try h.waitFor("the uninterrupted job", timeout: 60) { h.exists("spool/done/whole.yml") }

        try h.drop("killed.yml", Self.job.replacingOccurrences(of: "NAME", with: "killed"))
        let killedID: Int64 = 2
        try h.waitFor("a few images of the second job", timeout: 60) { (try? h.store().imageCount(jobID: killedID)) ?? 0 >= 5 }
        #expect(h.signal(SIGKILL) != 0)
        let before = try h.store().imageCount(jobID: killedID)
        #expect(before < 18)
        // Simulate the crash window: a file renamed into place without its row, and a stray temporary.
        let outDir = h.root + "/out/2-killed"
        let orphan = outDir + "/" + "killed-00017.png"
        if !FileManager.default.fileExists(atPath: orphan) {
            try AtomicFile.write(Array("not the real image".utf8), to: orphan)
        }
        _ = FileManager.default.createFile(atPath: outDir + "/.killed-00016.png.tmp-1-1", contents: Data([1, 2]))

        try h.start()
        try h.waitFor("the resumed job", timeout: 60) { h.exists("spool/done/killed.yml") }
        #expect(h.signal(SIGTERM) == 0)

        let store = try h.store()
        let job = try #require(try store.job(id: killedID))
        #expect(job.state == .done)
        #expect(job.attempts == 2)
        let whole = try store.images(jobID: 1), resumed = try store.images(jobID: killedID)
        #expect(whole.map(\.index) == Array(0 ..< 18))
        #expect(resumed.map(\.index) == Array(0 ..< 18))
        // Exactly the requested files, no temporaries, no orphans.
        let files = try FileManager.default.contentsOfDirectory(atPath: outDir).filter { $0.hasPrefix("killed-") }.sorted()
        #expect(files == (0 ..< 18).map { String(format: "killed-%05d.png", $0) })
        #expect(try FileManager.default.contentsOfDirectory(atPath: outDir).allSatisfy { !$0.hasPrefix(".") })
        for (a, b) in zip(whole, resumed) {
            let x = try ImageFile.read(path: a.path), y = try ImageFile.read(path: b.path)
            #expect(x.image == y.image, "image \(a.index) differs after resume")
            #expect(a.seed == b.seed && a.classIndex == b.classIndex)
            // The embedded record matches the row and the file hash matches the database.
            #expect(y.record.json == b.record)
            #expect(SHA256Hex.of(try FileBytes.read(path: b.path)) == b.sha256)
            #expect(VerifyReport.build(path: b.path, store: store).ok)
        }
        // And the images are what the generator defines for (seed, index, class).
        let expected = DeterministicTestGenerator.image(seed: 4242, index: 7, classIndex: 0, width: 28, height: 28, channels: 1)
        #expect(try ImageFile.read(path: resumed[7].path).image == expected.raster)
        let transitions = try store.transitions(jobID: killedID).map(\.to)
        #expect(transitions == [.pending, .active, .pending, .active, .done])
    }

    /// The same with the diffusion engine on the shipped model: the resumed job runs with another
    /// batch size, so every image of it is sampled in a batch of another composition.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: packageRoot + "/models/fashion-mnist/model.json")))
    func engineJobKilledMidwayResumesToBitIdenticalImages() throws {
        let h = try DaemonHarness(delayMs: 0, engine: true, batchSize: 3)
        let job = """
        name: NAME
        mode: classifier-free
        classes: [Trouser, Bag]
        images_per_class: 5
        sampler: {kind: ddim, steps: 12, eta: 0.5, guidance_scale: 1.5}
        seed: 31337
        """
        try h.start()
        try h.drop("whole.yml", job.replacingOccurrences(of: "NAME", with: "whole"))
        try h.waitFor("the uninterrupted job", timeout: 300) { h.exists("spool/done/whole.yml") }
        try h.drop("killed.yml", job.replacingOccurrences(of: "NAME", with: "killed"))
        try h.waitFor("the first images of the second job", timeout: 300) { (try? h.store().imageCount(jobID: 2)) ?? 0 >= 1 }
        #expect(h.signal(SIGKILL) != 0)
        let before = try h.store().imageCount(jobID: 2)
        #expect(before < 10)
        try h.writeConfig(batchSize: 4)
        try h.start()
        try h.waitFor("the resumed job", timeout: 300) { h.exists("spool/done/killed.yml") }
        #expect(h.signal(SIGTERM) == 0)
        let store = try h.store()
        #expect(try store.job(id: 2)?.attempts == 2)
        let whole = try store.images(jobID: 1), resumed = try store.images(jobID: 2)
        #expect(resumed.map(\.index) == Array(0 ..< 10))
        for (a, b) in zip(whole, resumed) {
            let x = try ImageFile.read(path: a.path).image, y = try ImageFile.read(path: b.path).image
            #expect(x == y, "image \(a.index) differs after a resume at \(before) images with another batch size")
            #expect(SHA256Hex.of(try FileBytes.read(path: b.path)) == b.sha256)
        }
        // Every image is reproducible from its embedded record alone.
        let regenerated = try RegenerationReport.build(path: resumed[3].path, modelsDirectory: packageRoot + "/models", threads: 1)
        #expect(regenerated.identical && regenerated.totalSamples == 784, "\(regenerated.render())")
        // The same through `diffusionctl verify --regenerate`, which reports its steps on stderr as it goes.
        let verify = try diffusionctl(["verify", "--regenerate", resumed[0].path, "--config", h.root + "/config.yml"])
        #expect(verify.status == 0 && verify.output.contains("bit-identical"), "\(verify)")
        #expect(verify.error.contains("regenerating: step 12/12"), "\(verify.error)")
        // The record lists the timesteps the network saw, in sampling order: ddim12 at T = 1000 is
        // stride 84 (the smallest with 12 steps), 924 down to 0.
        let record = try GenerationRecord.parse(resumed[0].record)
        #expect(record.fields["timesteps"] == "924,840,756,672,588,504,420,336,252,168,84,0")
        #expect(record.fields["chunk_sizes"]?.hasSuffix("64") == true)
        // Real samples, not a blank: the pixels vary.
        let first = try ImageFile.read(path: resumed[0].path).image.pixels
        #expect(Set(first).count > 20)
    }

    @Test func badFilesGoToFailedWhileAValidJobCompletes() throws {
        let h = try DaemonHarness(delayMs: 0)
        try h.start()
        try h.drop("bad-steps.yml", "images: 2\nsampler: {steps: 0}\n")
        try h.drop("bad-name.yml", "images: 2\nname: ../../etc\n")
        try h.drop("notes.txt", "hello\n")
        var bytes = Array("images: 2\nname: ".utf8) + [0xFF, 0xFE] + Array("\n".utf8)
        _ = FileManager.default.createFile(atPath: h.root + "/spool/incoming/.bin.yml", contents: Data(bytes))
        rename(h.root + "/spool/incoming/.bin.yml", h.root + "/spool/incoming/binary.yml")
        symlink("/etc/passwd", h.root + "/spool/incoming/link.yml")
        bytes = Array("images: 2\n".utf8)
        _ = FileManager.default.createFile(atPath: h.root + "/spool/incoming/.hidden.yml", contents: Data(bytes))
        _ = FileManager.default.createFile(atPath: h.root + "/spool/incoming/draft.yml~", contents: Data(bytes))
        try h.drop("good.yml", "name: good\nclasses: [1]\nimages: 4\noutput: {format: jpeg, quality: 90, upscale: 2}\nseed: 1\n")

        try h.waitFor("the good job", timeout: 60) { h.exists("spool/done/good.yml") }
        try h.waitFor("the rejects", timeout: 30) {
            ["bad-steps.yml", "bad-name.yml", "notes.txt", "binary.yml", "link.yml"].allSatisfy { h.exists("spool/failed/\($0).error") }
        }
        func errorText(_ name: String) throws -> String { try String(contentsOfFile: h.root + "/spool/failed/\(name).error", encoding: .utf8) }
        #expect(try errorText("bad-steps.yml").contains("sampler.steps: must be between 1 and 1000, got 0"))
        #expect(try errorText("bad-name.yml").contains("name:"))
        #expect(try errorText("binary.yml").contains("UTF-8"))
        #expect(try errorText("link.yml").contains("symbolic link"))
        #expect(try errorText("notes.txt").contains(".yml"))
        // Ignored names stay where they are.
        #expect(h.exists("spool/incoming/.hidden.yml") && h.exists("spool/incoming/draft.yml~"))
        // The link was moved, never followed.
        #expect(Spool.entryKind(h.root + "/spool/failed/link.yml") == "symbolic link")

        let store = try h.store()
        let good = try #require(try store.jobs(states: [.done]).first)
        let images = try store.images(jobID: good.id)
        #expect(images.count == 4 && images.allSatisfy { $0.format == "jpeg" && $0.className == "Trouser" })
        #expect(h.exists("out/\(good.id)-good/view/good-00000.jpg") && h.exists("out/\(good.id)-good/contact-sheet.png"))
        #expect(VerifyReport.build(path: images[0].path, store: store).ok)
        // Every reject is a failed job, entries that are no job file (a symlink, a .txt) included,
        // so that status and jobs show them with their reason.
        let failed = try store.jobs(states: [.failed])
        #expect(Set(failed.map(\.sourceName)) == ["bad-steps.yml", "bad-name.yml", "binary.yml", "notes.txt", "link.yml"])
        #expect(failed.first { $0.sourceName == "link.yml" }?.error?.contains("not a regular file (symbolic link)") == true)
        let status = try StatusReport.build(store: store, lockDirectory: h.root + "/state")
        #expect(status.daemon.alive)
        #expect(status.render().contains("link  failed  0/0 images  not a regular file (symbolic link)"), "\(status.render())")
        let jobs = try diffusionctl(["jobs", "--config", h.root + "/config.yml"])
        #expect(jobs.output.contains("notes") && jobs.output.contains("link"), "\(jobs.output)")

        // Cancel: a long job stops at a batch boundary.
        try h.drop("long.yml", "name: long\nclasses: [2]\nimages: 2000\n")
        try h.waitFor("the long job to start", timeout: 30) {
            (try? store.jobs(states: [.active]).first?.name) == "long"
        }
        let long = try #require(try store.jobs(states: [.active]).first)
        #expect(try store.requestCancel(jobID: long.id) == .requested)
        try h.waitFor("the cancel", timeout: 30) { (try? store.job(id: long.id)?.state) == .canceled }
        #expect(try store.imageCount(jobID: long.id) < 2000)
        // The record ends the job first, then the job file moves to failed/ with its reason.
        try h.waitFor("the canceled job's file in failed/", timeout: 10) { h.exists("spool/failed/long.yml.error") }

        // SIGTERM: a clean, quick exit.
        let start = Date()
        #expect(h.signal(SIGTERM) == 0)
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(try StatusReport.build(store: store, lockDirectory: h.root + "/state").daemon.alive == false)
    }

    @Test func sigtermStopsAtABatchBoundaryAndTheJobResumes() throws {
        let h = try DaemonHarness(delayMs: 100)
        try h.start()
        try h.drop("slow.yml", "name: slow\nclasses: [1]\nimages: 40\nseed: 9\n")
        try h.waitFor("some images", timeout: 60) { (try? h.store().imageCount(jobID: 1)) ?? 0 >= 4 }
        let start = Date()
        #expect(h.signal(SIGTERM) == 0)
        #expect(Date().timeIntervalSince(start) < 10)
        let store = try h.store()
        let job = try #require(try store.job(id: 1))
        #expect(job.state == .pending)
        #expect(job.attempts == 0) // a graceful stop is not a failed attempt
        let done = try store.imageCount(jobID: 1)
        #expect(done > 0 && done < 40)
        try h.start()
        try h.waitFor("the resumed job", timeout: 60) { h.exists("spool/done/slow.yml") }
        #expect(h.signal(SIGTERM) == 0)
        #expect(try store.images(jobID: 1).map(\.index) == Array(0 ..< 40))
    }
}
