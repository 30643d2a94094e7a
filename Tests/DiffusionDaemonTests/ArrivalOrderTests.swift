import Foundation
import Testing
@testable import DiffusionDaemon
import Provenance

/// Jobs of equal priority run in the order their files arrived in incoming/, also when
/// several arrive within one scan (0.1 s apart) and their names sort the other way.
@Suite(.serialized) struct ArrivalOrderTests {
    /// Writes `name` into `dir` the way `cp` does (create, write, close under the final name).
    func write(_ dir: String, _ name: String, _ text: String) throws {
        guard FileManager.default.createFile(atPath: dir + "/" + name, contents: Data(text.utf8)) else {
            throw HarnessError("cannot write \(name)")
        }
    }

    /// Writes `name` elsewhere with an mtime an hour old, then renames it in (as `mv` or `rsync -t` do).
    func moveIn(_ dir: String, _ name: String, _ text: String, from staging: String) throws {
        let temp = staging + "/" + name
        guard FileManager.default.createFile(atPath: temp, contents: Data(text.utf8)) else { throw HarnessError("cannot write \(temp)") }
        var times = [timespec(tv_sec: time(nil) - 3600, tv_nsec: 0), timespec(tv_sec: time(nil) - 3600, tv_nsec: 0)]
        guard utimensat(AT_FDCWD, temp, &times, 0) == 0 else { throw HarnessError("cannot set the mtime of \(temp)") }
        guard rename(temp, dir + "/" + name) == 0 else { throw HarnessError("cannot rename \(temp)") }
    }

    @Test func candidatesComeInArrivalOrderNotNameOrder() throws {
        let dir = makeTempDir("arrival")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = Spool(root: dir + "/spool")
        try spool.ensureDirectories()
        try FileManager.default.createDirectory(atPath: dir + "/staging", withIntermediateDirectories: true)
        // Within 0.1 s: names in reverse order; the last one renamed in with an old mtime.
        try write(spool.incoming, "d.yml", "images: 1\n")
        usleep(25_000)
        try write(spool.incoming, "c.yml", "images: 1\n")
        usleep(25_000)
        try write(spool.incoming, "b.yml", "images: 1\n")
        usleep(25_000)
        try moveIn(spool.incoming, "a.yml", "images: 1\n", from: dir + "/staging")
        #expect(spool.candidates() == ["d.yml", "c.yml", "b.yml", "a.yml"])
    }

    @Test func equalPriorityJobsRunInArrivalOrder() throws {
        let h = try DaemonHarness(delayMs: 0)
        try FileManager.default.createDirectory(atPath: h.root + "/spool/incoming", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: h.root + "/staging", withIntermediateDirectories: true)
        let incoming = h.root + "/spool/incoming"
        func job(_ name: String) -> String {
            "name: \(name)\nclasses: [Trouser]\nimages_per_class: 1\nsampler: {kind: ddim, steps: 2}\nseed: 1\n"
        }
        // Four files within 0.1 s while the daemon is down (one scan at its start sees them all),
        // names sorting against arrival; the third renamed in with an mtime an hour old.
        try write(incoming, "zulu.yml", job("zulu"))
        usleep(20_000)
        try write(incoming, "yankee.yml", job("yankee"))
        usleep(20_000)
        try moveIn(incoming, "xray.yml", job("xray"), from: h.root + "/staging")
        usleep(20_000)
        try write(incoming, "alpha.yml", job("alpha"))
        try h.start()
        try h.waitFor("all four jobs", timeout: 60) {
            ["zulu", "yankee", "xray", "alpha"].allSatisfy { h.exists("spool/done/\($0).yml") }
        }
        #expect(h.signal(SIGTERM) == 0)
        let store = try h.store()
        let jobs = try store.jobs().sorted { $0.id < $1.id }
        #expect(jobs.map(\.name) == ["zulu", "yankee", "xray", "alpha"], "ingested in \(jobs.map(\.name))")
        // The order they ran in: when each became active.
        let started = try jobs.map { j -> (String, Double) in
            let t = try #require(try store.transitions(jobID: j.id).first { $0.to == .active })
            return (j.name, t.at)
        }.sorted { $0.1 < $1.1 }.map(\.0)
        #expect(started == ["zulu", "yankee", "xray", "alpha"], "ran in \(started)")
    }
}
