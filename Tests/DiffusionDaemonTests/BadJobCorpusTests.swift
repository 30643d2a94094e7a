import DiffusionControl
import DiffusionDaemon
import Foundation
import ImageCodecs
import Provenance
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// One case of Tests/Fixtures/bad-jobs/manifest.tsv.
struct BadJobCase: CustomStringConvertible {
    /// The file name in spool/incoming (and in the corpus folder for kind "file").
    var file: String
    /// "file" (committed in the corpus folder), or what the test makes at run time: fifo, socket,
    /// directory, symlink:<target> (VALID: a valid job outside the spool), empty, oversized:<bytes>.
    var kind: String
    /// What the .error file must contain.
    var expect: String
    var what: String
    var description: String { file }

    static let folder = packageRoot + "/Tests/Fixtures/bad-jobs"

    static let all: [BadJobCase] = {
        let text = (try? String(contentsOfFile: folder + "/manifest.tsv", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            return BadJobCase(file: f[0], kind: f[1], expect: f[2], what: f.count > 3 ? f[3] : "")
        }
    }()

    var bytes: [UInt8] { (try? FileBytes.read(path: Self.folder + "/" + file)) ?? [] }
    var isJobFileName: Bool { Spool.jobExtensions.contains((file as NSString).pathExtension.lowercased()) }
}

@Suite struct BadJobCorpusTests {
    @Test func theCorpusCoversEveryKindOfBadInput() throws {
        let cases = BadJobCase.all
        #expect(cases.count >= 40)
        #expect(Set(cases.map(\.file)).count == cases.count, "duplicate names in manifest.tsv")
        for c in cases where c.kind == "file" {
            #expect(FileManager.default.fileExists(atPath: BadJobCase.folder + "/" + c.file), "\(c.file) is listed but missing")
        }
        let listed = Set(cases.map(\.file))
        let present = try FileManager.default.contentsOfDirectory(atPath: BadJobCase.folder).filter { $0 != "manifest.tsv" }
        #expect(present.allSatisfy(listed.contains), "files not in manifest.tsv: \(present.filter { !listed.contains($0) })")
        let prefixes = ["yaml-", "json-", "type-", "unknown-key-", "count-", "unknown-", "number-", "path-", "binary-", "utf8-",
                        "control-", "alias-", "nesting-", "duplicate-", "special-fifo", "special-symlink", "special-directory",
                        "special-zero", "special-oversized"]
        for p in prefixes { #expect(cases.contains { $0.file.hasPrefix(p) }, "no case for \(p)") }
    }

    /// Every committed job file, straight through the validator: rejected, and
    /// the error names the problem (the field path and what is wrong with it).
    @Test(arguments: BadJobCase.all.filter { $0.kind == "file" && $0.isJobFileName })
    func theValidatorRejectsIt(_ c: BadJobCase) {
        let start = Date()
        do {
            _ = try validator.validate(c.bytes, fileName: c.file, drawSeed: { 1 })
            Issue.record("\(c.file) (\(c.what)) was accepted")
        } catch {
            #expect(error.description.contains(c.expect), "\(c.file): \(error.description)")
        }
        #expect(Date().timeIntervalSince(start) < 2, "\(c.file) took \(Date().timeIntervalSince(start)) s")
    }

    /// The fuzzer's seed corpus (Tests/Fuzz/corpus): every file validates the same way twice,
    /// and the examples among the seeds are accepted.
    @Test func theFuzzSeedsReplay() throws {
        let folder = packageRoot + "/Tests/Fuzz/corpus"
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
        #expect(names.count >= 40)
        for name in names {
            let bytes = try FileBytes.read(path: folder + "/" + name)
            let a = Result { () throws(ValidationFailure) in try validator.validate(bytes, fileName: name, drawSeed: { 1 }) }
            let b = Result { () throws(ValidationFailure) in try validator.validate(bytes, fileName: name, drawSeed: { 1 }) }
            switch (a, b) {
            case let (.success(x), .success(y)): #expect(x == y, "\(name)")
            case let (.failure(x), .failure(y)): #expect(x.description == y.description && !x.errors.isEmpty, "\(name)")
            default: Issue.record("\(name): two validations disagree")
            }
            if name.hasPrefix("example-") || name.hasPrefix("valid-") {
                if case let .failure(e) = a { Issue.record("\(name) rejected: \(e)") }
            }
        }
    }

    /// The whole corpus, plus the special files only a test can make, dropped
    /// into the spool of a running daemon at once: each lands in failed/ beside
    /// an .error that names the problem, the daemon stays up, valid jobs
    /// dropped among and after them complete, and nothing appears outside the
    /// configured directories.
    @Test func theDaemonRejectsEachFileAndKeepsServing() throws {
        let h = try DaemonHarness(delayMs: 0, fashionStubs: true)
        let outside = h.root + "/outside"
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        let valid = "name: valid\nclasses: [Trouser]\nimages: 2\nseed: 5\n"
        try valid.write(toFile: outside + "/valid.yml", atomically: true, encoding: .utf8)
        try h.start()
        let before = try Self.snapshot(h.root)
        let incoming = h.root + "/spool/incoming"

        for c in BadJobCase.all {
            let temp = incoming + "/.\(c.file).part"
            switch c.kind {
            case "file":
                try h.drop(c.file, bytes: c.bytes)
                continue
            case "fifo":
                #expect(mkfifo(temp, 0o644) == 0)
            case "socket":
                let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                var addr = sockaddr_un()
                addr.sun_family = sa_family_t(AF_UNIX)
                let bytes = Array(temp.utf8)
                #expect(bytes.count < MemoryLayout.size(ofValue: addr.sun_path))
                withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
                let rc = withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
                #expect(rc == 0)
                close(fd)
            case "directory":
                try FileManager.default.createDirectory(atPath: temp, withIntermediateDirectories: false)
                try valid.write(toFile: temp + "/inside.yml", atomically: true, encoding: .utf8)
            case "empty":
                #expect(FileManager.default.createFile(atPath: temp, contents: Data()))
            case let k where k.hasPrefix("symlink:"):
                let target = String(k.dropFirst("symlink:".count))
                #expect(symlink(target == "VALID" ? outside + "/valid.yml" : target, temp) == 0)
            case let k where k.hasPrefix("oversized:"):
                let size = Int(k.dropFirst("oversized:".count))!
                // A valid job, padded with a comment; past 1 MiB a sparse file (never read anyway).
                let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL, 0o644)
                let head = Array("images: 2\n#".utf8)
                _ = head.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if size <= 1 << 20 {
                    let pad = [UInt8](repeating: UInt8(ascii: "x"), count: size - head.count - 1) + [0x0A]
                    _ = pad.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                } else {
                    #expect(ftruncate(fd, off_t(size)) == 0)
                }
                close(fd)
            default:
                Issue.record("unknown kind \(c.kind) in manifest.tsv")
                continue
            }
            #expect(rename(temp, incoming + "/" + c.file) == 0, "\(c.file)")
        }
        // Valid jobs among the bad ones: two with the same job name (each gets its own
        // folder, <id>-<name>), and one file name dropped twice (done/ keeps both).
        try h.drop("twin-a.yml", "name: twin\nclasses: [Bag]\nimages: 3\nseed: 1\n")
        try h.drop("twin-b.yml", "name: twin\nclasses: [Bag]\nimages: 3\nseed: 2\n")
        try h.drop("again.yml", "name: again\nimages: 1\nseed: 3\n")
        try h.waitFor("the first again.yml", timeout: 60) { h.exists("spool/done/again.yml") }
        try h.drop("again.yml", "name: again\nimages: 1\nseed: 4\n")
        // Names the spool ignores stay where they are.
        try Data("images: 2\n".utf8).write(to: URL(fileURLWithPath: incoming + "/.hidden.yml"))
        try Data("images: 2\n".utf8).write(to: URL(fileURLWithPath: incoming + "/draft.yml~"))

        let cases = BadJobCase.all
        try h.waitFor("every bad file in failed/", timeout: 120) {
            cases.allSatisfy { h.exists("spool/failed/\($0.file).error") }
        }
        try h.waitFor("the valid jobs", timeout: 60) {
            ["twin-a.yml", "twin-b.yml", "again.yml", "again-1.yml"].allSatisfy { h.exists("spool/done/\($0)") }
        }
        for c in cases {
            let error = (try? String(contentsOfFile: h.root + "/spool/failed/\(c.file).error", encoding: .utf8)) ?? ""
            #expect(error.hasPrefix(c.file + ": "), "\(c.file): \(error)")
            #expect(error.contains(c.expect), "\(c.file) (\(c.what)): \(error)")
            // The entry itself was moved, as it was: links are never followed, FIFOs never opened.
            let kind = Spool.entryKind(h.root + "/spool/failed/" + c.file)
            let expectedKind = ["fifo": "FIFO", "socket": "socket", "directory": "directory"][c.kind]
                ?? (c.kind.hasPrefix("symlink:") ? "symbolic link" : "regular file")
            #expect(kind == expectedKind, "\(c.file) is a \(kind ?? "nothing") in failed/")
        }
        #expect(try String(contentsOfFile: outside + "/valid.yml", encoding: .utf8) == valid, "the symlink's target was touched")
        #expect(h.exists("spool/incoming/.hidden.yml") && h.exists("spool/incoming/draft.yml~"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: h.root + "/spool/active").isEmpty)

        // Still up, and a valid job dropped after all of them completes.
        #expect(h.process?.isRunning == true)
        try h.drop("after.yml", "name: after\nclasses: [Sneaker, 2]\nimages: 4\nseed: 11\n")
        try h.waitFor("the job dropped after the corpus", timeout: 60) { h.exists("spool/done/after.yml") }
        let store = try h.store()
        #expect(try StatusReport.build(store: store, lockDirectory: h.root + "/state").daemon.alive)
        let done = try store.jobs(states: [.done])
        #expect(Set(done.map(\.name)) == ["twin", "again", "after"] && done.count == 5)
        // Every rejected entry (job files, links, FIFOs, folders) is a failed job with its error.
        let failed = try store.jobs(states: [.failed], limit: 1000)
        #expect(failed.allSatisfy { ($0.error ?? "").isEmpty == false })
        #expect(Set(failed.map(\.sourceName)) == Set(cases.map(\.file)), "\(Set(cases.map(\.file)).subtracting(failed.map(\.sourceName)))")

        // Output: one folder per valid job, nothing else.
        let folders = try FileManager.default.contentsOfDirectory(atPath: h.root + "/out").filter { $0 != DaemonLock.fileName }.sorted()
        #expect(folders == done.map { "\($0.id)-\($0.name)" }.sorted())
        for job in done {
            let images = try store.images(jobID: job.id)
            #expect(images.count == job.totalImages)
            #expect(images.allSatisfy { $0.path.hasPrefix(h.root + "/out/\(job.id)-\(job.name)/") })
        }
        #expect(h.signal(SIGTERM) == 0)

        // Nothing was written outside the configured directories (spool/, out/,
        // state/), and no traversal target exists anywhere it could have landed.
        let after = try Self.snapshot(h.root)
        #expect(after == before, "changed outside spool/, out/, state/: \(after.symmetricDifference(before).sorted())")
        for place in [h.root, (h.root as NSString).deletingLastPathComponent, "/tmp", "/", "/etc"] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: place)) ?? []
            #expect(!names.contains { $0.contains("diffusiond-escape") }, "\(place) has an escape target")
        }
    }

    /// Every path under `root` with its kind, size and mtime, except inside the
    /// directories the daemon is configured to write (and its log).
    static func snapshot(_ root: String) throws -> Set<String> {
        var out = Set<String>()
        let skip: Set<String> = ["spool", "out", "state", "daemon.log"]
        func walk(_ rel: String) throws {
            let path = rel.isEmpty ? root : root + "/" + rel
            for name in try FileManager.default.contentsOfDirectory(atPath: path) {
                let r = rel.isEmpty ? name : rel + "/" + name
                if rel.isEmpty && skip.contains(name) { continue }
                var st = stat()
                guard lstat(root + "/" + r, &st) == 0 else { continue }
                out.insert("\(r) \(st.st_mode) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)")
                if st.st_mode & S_IFMT == S_IFDIR { try walk(r) }
            }
        }
        try walk("")
        return out
    }
}
