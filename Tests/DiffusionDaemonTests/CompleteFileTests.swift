import DiffusionDaemon
import Foundation
import Provenance
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The daemon claims a file in incoming/ only once it is complete: written by real
/// processes (a slow writer, `cp`, `rsync`, `ed` after `touch`) into a running daemon.
@Suite(.serialized) struct CompleteFileTests {
    static let body = "classes: [Coat]\nimages_per_class: 1\nsampler: {kind: ddim, steps: 2}\nseed: 31\n"

    /// Runs `argv` to completion; throws with its output when it fails.
    func run(_ argv: [String], in dir: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        p.waitUntilExit()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard p.terminationStatus == 0 else { throw HarnessError("\(argv.joined(separator: " ")) failed: \(out)") }
    }

    /// The job recorded for the file `name`: done, with the complete file's classes and seed.
    func expectDoneWithWholeFile(_ h: DaemonHarness, _ name: String) throws {
        try h.waitFor("\(name) in done/ or failed/", timeout: 60) {
            h.exists("spool/done/\(name).yml") || h.exists("spool/failed/\(name).yml")
        }
        #expect(!h.exists("spool/failed/\(name).yml"), "rejected: \((try? String(contentsOfFile: h.root + "/spool/failed/\(name).yml.error", encoding: .utf8)) ?? "")")
        let job = try #require(try h.store().jobs().first { $0.sourceName == "\(name).yml" })
        #expect(job.state == .done)
        let spec = try #require(job.spec)
        #expect(spec.contains("\"Coat\"") && spec.contains("31"), "spec \(spec)")
        #expect(job.totalImages == 1)
    }

    @Test func aSlowWriterIsClaimedOnlyAfterItCloses() throws {
        let h = try DaemonHarness(delayMs: 0, fashionStubs: true, extraConfig: "settle_seconds: 1")
        try h.start()
        // The services run (the watch is in place) once the heartbeat is written: a file the daemon
        // starts on while a writer pauses in it has no event to go by (see IncomingReadiness).
        try h.waitFor("the heartbeat", timeout: 30) { (try? h.store().heartbeat()) != nil }
        usleep(500_000)
        // One open, the first half, 3 s of silence (longer than the settle time and a rescan), the rest.
        let script = "exec 3> spool/incoming/slow.yml; printf 'name: slow\\n' >&3; sleep 3; printf '\(Self.body.replacingOccurrences(of: "\n", with: "\\n"))' >&3"
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: "/bin/sh")
        writer.arguments = ["-c", script]
        writer.currentDirectoryURL = URL(fileURLWithPath: h.root)
        try writer.run()
        sleep(2)
        #expect(h.exists("spool/incoming/slow.yml"), "claimed while its writer still had it open")
        writer.waitUntilExit()
        #expect(writer.terminationStatus == 0)
        try expectDoneWithWholeFile(h, "slow")
    }

    @Test func cpRsyncAndAnEditorAfterTouch() throws {
        let h = try DaemonHarness(delayMs: 0, fashionStubs: true, extraConfig: "settle_seconds: 1")
        try FileManager.default.createDirectory(atPath: h.root + "/staging", withIntermediateDirectories: true)
        // Big enough that cp and rsync write it in several pieces.
        let padding = String(repeating: "# padding line for a job file that takes several writes\n", count: 900)
        for name in ["copied", "synced"] {
            try ("name: \(name)\n" + padding + Self.body).write(toFile: h.root + "/staging/\(name).yml", atomically: true, encoding: .utf8)
        }
        try h.start()
        try run(["cp", "staging/copied.yml", "spool/incoming/"], in: h.root)
        try run(["rsync", "staging/synced.yml", "spool/incoming/"], in: h.root)
        // An empty file first (touch), then an editor writes it in place within the settle time.
        try run(["touch", "spool/incoming/edited.yml"], in: h.root)
        usleep(300_000)
        let ed = Process()
        ed.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        ed.arguments = ["ed", "-s", "spool/incoming/edited.yml"]
        ed.currentDirectoryURL = URL(fileURLWithPath: h.root)
        let input = Pipe()
        ed.standardInput = input
        try ed.run()
        input.fileHandleForWriting.write(Data("a\nname: edited\n\(Self.body).\nw\nq\n".utf8))
        try input.fileHandleForWriting.close()
        ed.waitUntilExit()
        #expect(ed.terminationStatus == 0)
        for name in ["copied", "synced", "edited"] { try expectDoneWithWholeFile(h, name) }
        #expect(try h.store().jobs().count == 3, "one job per file, none rejected as empty or cut short")
    }
}

extension CompleteFileTests {
    /// A file that waits out its settle time (there before the daemon watched) keeps its place:
    /// a file renamed in after it, complete at once, is held back until the first is claimed.
    @Test func aSettlingFileKeepsItsPlaceInTheQueue() throws {
        let h = try DaemonHarness(delayMs: 0, fashionStubs: true, extraConfig: "settle_seconds: 2")
        try FileManager.default.createDirectory(atPath: h.root + "/spool/incoming", withIntermediateDirectories: true)
        try "name: first\n\(Self.body)".write(toFile: h.root + "/spool/incoming/first.yml", atomically: false, encoding: .utf8)
        try h.start()
        try h.drop("second.yml", "name: second\n\(Self.body)")
        try h.waitFor("both jobs", timeout: 60) { h.exists("spool/done/first.yml") && h.exists("spool/done/second.yml") }
        let jobs = try h.store().jobs().sorted { $0.id < $1.id }.map(\.name)
        #expect(jobs == ["first", "second"])
    }
}

/// `IncomingReadiness` on events and files made here.
@Suite struct IncomingReadinessTests {
    @Test func eventsDecideAndFilesWithoutEventsSettle() throws {
        let dir = makeTempDir("readiness")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/a.yml"
        try "images: 1\n".write(toFile: path, atomically: false, encoding: .utf8)
        let now = IncomingReadiness.wallClock()
        var r = IncomingReadiness(settleSeconds: 5)
        // Found by a scan: waits until unchanged for 5 s.
        #expect(!r.isComplete(name: "a.yml", path: path, now: now))
        #expect(r.isComplete(name: "a.yml", path: path, now: now + 5.1))
        // Closed after writing: complete at once; written to again: waits for the next close, however long.
        r.record([("a.yml", .created), ("a.yml", .written), ("a.yml", .closed)], now: now)
        #expect(r.isComplete(name: "a.yml", path: path, now: now))
        r.record([("a.yml", .written)], now: now)
        #expect(!r.isComplete(name: "a.yml", path: path, now: now + 3600))
        r.record([("a.yml", .closed)], now: now)
        #expect(r.isComplete(name: "a.yml", path: path, now: now))
        // A create alone (a hard link) settles like a scanned file; an overflow forgets every event.
        r.record([("a.yml", .gone), ("a.yml", .created)], now: now)
        #expect(!r.isComplete(name: "a.yml", path: path, now: now))
        r.record([("a.yml", .written)], now: now)
        r.forget()
        #expect(r.isComplete(name: "a.yml", path: path, now: now + 5.1))
        // An empty file waits the settle time after its close (touch, then an editor).
        let empty = dir + "/e.yml"
        #expect(FileManager.default.createFile(atPath: empty, contents: Data()))
        r.record([("e.yml", .created), ("e.yml", .closed)], now: now)
        #expect(!r.isComplete(name: "e.yml", path: empty, now: now + 1))
        #expect(r.isComplete(name: "e.yml", path: empty, now: now + 5.1))
        // The order files completed in breaks ties between equal ctimes (the kernel's clock is coarse).
        r.record([("z.yml", .movedIn), ("b.yml", .closed)], now: now)
        #expect(r.arrivalIndex("z.yml") < r.arrivalIndex("b.yml") && r.arrivalIndex("never.yml") == Int.max)
        // Gone from the folder: never complete.
        #expect(!r.isComplete(name: "x.yml", path: dir + "/x.yml", now: now + 100))
    }
}
