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

/// Write errors someone can fix make a job wait, not fail: the output folder made immutable
/// (or read-only) and removed mid-job, on a real daemon; and `diffusionctl retry` resumes a
/// canceled job to the images an uninterrupted run makes.
@Suite(.serialized) struct WriteFaultTests {
    static let job = "name: faults\nclasses: [Trouser, Pullover]\nimages: 40\nseed: 5\n"

    /// Every image of job 1 recorded once, its file there with the recorded SHA-256 and the
    /// pixels of the deterministic test generator (what an uninterrupted run writes).
    func expectComplete(_ h: DaemonHarness, total: Int, seed: UInt64) throws {
        let store = try h.store()
        #expect(try store.job(id: 1)?.state == .done)
        let rows = try store.images(jobID: 1)
        #expect(rows.map(\.index) == Array(0 ..< total))
        for row in rows {
            let bytes = try FileBytes.read(path: row.path)
            #expect(SHA256Hex.of(bytes) == row.sha256, "\(row.path)")
            let expected = DeterministicTestGenerator.image(seed: seed, index: row.index, classIndex: row.classIndex,
                                                            width: 28, height: 28, channels: 1)
            #expect(try ImageFile.read(path: row.path).image.pixels == expected.pixels, "image \(row.index)")
        }
    }

    /// Makes `dir` unwritable: immutable as root (root ignores permission bits), read-only otherwise.
    func lock(_ dir: String, _ on: Bool) throws {
        let status: Int32
        if getuid() == 0 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["chattr", on ? "+i" : "-i", dir]
            try p.run()
            p.waitUntilExit()
            status = p.terminationStatus
        } else {
            status = chmod(dir, on ? 0o555 : 0o755)
        }
        guard status == 0 else { throw HarnessError("cannot \(on ? "lock" : "unlock") \(dir)") }
    }

    @Test func anUnwritableOutputFolderMakesTheJobWaitThenResume() throws {
        let h = try DaemonHarness(delayMs: 60)
        try h.start()
        try h.drop("faults.yml", Self.job)
        let store = try h.store()
        let dir = h.root + "/out/1-faults"
        try h.waitFor("the first images", timeout: 30) { (try? store.imageCount(jobID: 1)) ?? 0 >= 4 }
        try lock(dir, true)
        defer { try? lock(dir, false) }
        try h.waitFor("the job to wait", timeout: 30) { (try? store.heartbeat()?.status.contains("permission denied")) == true }
        let line = try #require(try store.heartbeat()?.status)
        #expect(line.contains("waiting until the output folder is writable") && line.contains(dir + "/faults-"), "\(line)")
        #expect(try store.job(id: 1)?.state == .active)
        sleep(6) // a retry that still fails
        #expect(try store.job(id: 1)?.state == .active)
        try lock(dir, false)
        try h.waitFor("the job to finish", timeout: 60) { h.exists("spool/done/faults.yml") }
        try expectComplete(h, total: 40, seed: 5)
        #expect(h.log().contains("output writable again; job resumed"))
    }

    @Test func aRemovedOutputFolderIsMadeAgainWithEveryImage() throws {
        let h = try DaemonHarness(delayMs: 60)
        try h.start()
        try h.drop("faults.yml", Self.job)
        let store = try h.store()
        try h.waitFor("the first images", timeout: 30) { (try? store.imageCount(jobID: 1)) ?? 0 >= 10 }
        try FileManager.default.removeItem(atPath: h.root + "/out/1-faults")
        try h.waitFor("the job to finish", timeout: 60) {
            h.exists("spool/done/faults.yml") || h.exists("spool/failed/faults.yml")
        }
        // The images lost with the folder are made again: no row points at a missing file.
        try expectComplete(h, total: 40, seed: 5)
    }

    @Test func retryResumesACanceledJobToTheSameImages() throws {
        let h = try DaemonHarness(delayMs: 60)
        try h.start()
        try h.drop("faults.yml", Self.job)
        try h.drop("rejected.yml", "images: 0\n")
        let store = try h.store()
        try h.waitFor("the first images", timeout: 30) { (try? store.imageCount(jobID: 1)) ?? 0 >= 6 }
        let cancel = try diffusionctl(["cancel", "1", "--config", h.root + "/config.yml"])
        #expect(cancel.status == 0)
        try h.waitFor("the cancel", timeout: 30) { h.exists("spool/failed/faults.yml") }
        let recorded = try store.imageCount(jobID: 1)
        #expect(try recorded < 40 && store.job(id: 1)?.state == .canceled)

        let retry = try diffusionctl(["retry", "1", "--config", h.root + "/config.yml"])
        #expect(retry.status == 0 && retry.output.contains("queued again: \(recorded) of 40"), "\(retry)")
        try h.waitFor("the retried job", timeout: 60) { h.exists("spool/done/faults.yml") }
        #expect(!h.exists("spool/failed/faults.yml") && !h.exists("spool/failed/faults.yml.error"))
        try expectComplete(h, total: 40, seed: 5)
        let reasons = try store.transitions(jobID: 1).map(\.reason)
        #expect(reasons.contains("retry requested (diffusionctl retry)"))

        // Only failed or canceled jobs with a valid spec.
        let again = try diffusionctl(["retry", "1", "--config", h.root + "/config.yml"])
        #expect(again.status != 0 && again.error.contains("it is done; only failed or canceled jobs are retried"), "\(again)")
        let rejected = try #require(try store.jobs().first { $0.sourceName == "rejected.yml" })
        let bad = try diffusionctl(["retry", String(rejected.id), "--config", h.root + "/config.yml"])
        #expect(bad.status != 0 && bad.error.contains("its job file was rejected"), "\(bad)")
        let none = try diffusionctl(["retry", "999", "--config", h.root + "/config.yml"])
        #expect(none.status != 0 && none.error.contains("no job 999"), "\(none)")
    }
}
