import DaemonTestSupport
import DiffusionDaemon
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct NotifyTests {
    @Test func pathAndAbstractSockets() throws {
        let dir = makeTempDir("notify")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for address in [dir + "/notify.sock", "@diffusiond-test-\(getpid())-\(UInt32.random(in: 0 ... .max))"] {
            let socket = try NotifySocket(address: address)
            let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": address])
            #expect(n.isEnabled)
            n.ready(status: "ready")
            #expect((socket.receive(timeout: 2) ?? "").hasPrefix("READY=1\nSTATUS=ready"))
            n.watchdog()
            #expect((socket.receive(timeout: 2) ?? "") == "WATCHDOG=1")
            n.stopping()
            #expect((socket.receive(timeout: 2) ?? "") == "STOPPING=1")
        }
        let off = SystemdNotifier(environment: [:])
        #expect(!off.isEnabled && !off.send("READY=1"))
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "4000000"]) == .seconds(4))
        #expect(SystemdNotifier.watchdogInterval(environment: ["WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"]) == nil)
        #expect(SystemdNotifier.watchdogInterval(environment: [:]) == nil)
    }
}

@Suite struct SpoolTests {
    @Test func ignoredNames() {
        for name in [".x.yml", "job.yml~", "job.yml.swp", ".job.yml.swp", "a.tmp", "#job.yml#", "x.part", "j.yml.error"] {
            #expect(Spool.isIgnored(name), "\(name)")
        }
        for name in ["job.yml", "job.json", "a.yaml", "notes.txt"] { #expect(!Spool.isIgnored(name), "\(name)") }
    }

    @Test func submitIsAtomicAndUnique() throws {
        let dir = makeTempDir("spool")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let spool = Spool(root: dir)
        try spool.ensureDirectories()
        #expect(try spool.submit(Array("images: 1\n".utf8), name: "a.yml") == "a.yml")
        #expect(try spool.submit(Array("images: 2\n".utf8), name: "a.yml") == "a-1.yml")
        #expect(try FileManager.default.contentsOfDirectory(atPath: spool.incoming).sorted() == ["a-1.yml", "a.yml"])
        #expect(spool.candidates() == ["a.yml", "a-1.yml"] || spool.candidates().sorted() == ["a-1.yml", "a.yml"])
        let claimed = try #require(try spool.claim("a.yml"))
        #expect(Spool.originalName(ofSpoolName: claimed) == "a.yml")
        #expect(try spool.claim("a.yml") == nil)
        #expect(try spool.finish(spoolName: claimed) == "a.yml")
        #expect(FileManager.default.fileExists(atPath: spool.done + "/a.yml"))
    }
}
