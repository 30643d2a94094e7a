import DiffusionDaemon
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket bound to `address` ('@' = abstract) that collects messages.
func boundSocket(_ address: String) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    var bytes = Array(address.utf8)
    if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
    let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    var tv = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

func receive(_ fd: Int32) -> String {
    var buf = [UInt8](repeating: 0, count: 4096)
    let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
    return n > 0 ? String(decoding: buf[0 ..< n], as: UTF8.self) : ""
}

@Suite struct NotifyTests {
    @Test func pathAndAbstractSockets() {
        let dir = makeTempDir("notify")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for address in [dir + "/notify.sock", "@diffusiond-test-\(getpid())-\(UInt32.random(in: 0 ... .max))"] {
            let fd = boundSocket(address)
            defer { close(fd) }
            let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": address])
            #expect(n.isEnabled)
            n.ready(status: "ready")
            #expect(receive(fd).hasPrefix("READY=1\nSTATUS=ready"))
            n.watchdog()
            #expect(receive(fd) == "WATCHDOG=1")
            n.stopping()
            #expect(receive(fd) == "STOPPING=1")
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
