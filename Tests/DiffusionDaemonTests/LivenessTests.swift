import DiffusionControl
import DiffusionDaemon
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `diffusionctl status` and `submit` ask the daemon's lock, not the heartbeat's age: real
/// daemon processes, killed, stopped and stopped cleanly, and the real `diffusionctl`.
@Suite(.serialized) struct LivenessTests {
    func status(_ h: DaemonHarness) throws -> (code: Int32, text: String, json: [String: Any]) {
        let text = try diffusionctl(["status", "--config", h.root + "/config.yml"])
        let json = try diffusionctl(["status", "--config", h.root + "/config.yml", "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any] ?? [:]
        #expect(text.status == json.status)
        return (text.status, text.output, object["daemon"] as? [String: Any] ?? [:])
    }

    @Test func killedStoppedAndCleanlyStoppedDaemons() throws {
        let h = try DaemonHarness(delayMs: 0)
        // Never started: down, exit 3, and submit says so.
        try "name: early\nclasses: [Trouser]\nimages: 1\n".write(toFile: h.root + "/early.yml", atomically: true, encoding: .utf8)
        let missing = try diffusionctl(["submit", h.root + "/early.yml", "--config", h.root + "/config.yml"])
        #expect(missing.status != 0 && missing.error.contains("spool/incoming does not exist"), "\(missing)")
        for dir in ["state", "spool/incoming"] {
            try FileManager.default.createDirectory(atPath: h.root + "/" + dir, withIntermediateDirectories: true)
        }
        let early = try diffusionctl(["submit", h.root + "/early.yml", "--config", h.root + "/config.yml"])
        #expect(early.status == 0 && early.error.contains("no diffusiond is running"), "\(early)")

        try h.start()
        try h.waitFor("the early job", timeout: 30) { h.exists("spool/done/early.yml") }
        let pid = try #require(h.pid)
        var s = try status(h)
        #expect(s.code == 0 && s.text.hasPrefix("diffusiond: running (pid \(pid)"), "\(s.text)")
        #expect(s.json["alive"] as? Bool == true && s.json["liveness"] as? String == "lock")
        // Right after the job ended: idle, not "running job 1".
        #expect(!s.text.split(separator: "\n")[0].contains("running job"), "\(s.text)")
        try "name: late\nclasses: [Trouser]\nimages: 1\n".write(toFile: h.root + "/late.yml", atomically: true, encoding: .utf8)
        let late = try diffusionctl(["submit", h.root + "/late.yml", "--config", h.root + "/config.yml"])
        #expect(late.status == 0 && !late.error.contains("no diffusiond"), "\(late)")

        // Stopped (SIGSTOP) for longer than the heartbeat's staleness: alive, not responding.
        kill(pid, SIGSTOP)
        sleep(6)
        s = try status(h)
        #expect(s.code == 0 && s.json["alive"] as? Bool == true && s.json["responding"] as? Bool == false, "\(s.json)")
        #expect(s.text.contains("running (pid \(pid)) but not responding"), "\(s.text)")
        kill(pid, SIGCONT)

        // SIGKILL: down at once (the kernel drops the lock), exit 3.
        _ = h.signal(SIGKILL)
        s = try status(h)
        #expect(s.code == 3 && s.json["alive"] as? Bool == false, "\(s.json)")
        #expect(s.text.hasPrefix("diffusiond: not running"), "\(s.text)")

        // A clean stop: down, and no "stopping" left in the JSON.
        try h.start()
        let second = h.pid.map(Int.init)
        try h.waitFor("the second daemon's heartbeat", timeout: 30) { (try? h.store().heartbeat()?.pid) == second }
        #expect(h.signal(SIGTERM) == 0)
        s = try status(h)
        #expect(s.code == 3 && s.json["alive"] as? Bool == false && s.json["status"] == nil, "\(s.json)")
    }
}
