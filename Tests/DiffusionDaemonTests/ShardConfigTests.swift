import DiffusionDaemon
import Foundation
import Testing

/// The config keys of shards and leases, and the probe of a shared output folder.
@Suite struct ShardConfigTests {
    func parse(_ text: String) throws(ValidationFailure) -> DaemonConfig { try DaemonConfig.parse(Array(text.utf8)) }

    @Test func workerNameAndShardSettingsParse() throws {
        let c = try parse("worker_name: gpu-1.example\nshards: {images: 8, lease_seconds: 3, heartbeat_seconds: 0.5}\n")
        #expect(c.workerName == "gpu-1.example")
        #expect(c.shards.images == 8 && c.shards.leaseSeconds == 3 && c.shards.heartbeatSeconds == 0.5)
        let d = try parse("batch_size: 2\n")
        #expect(d.shards == DaemonConfig.Shards() && d.workerName == DaemonConfig.defaultWorkerName && !d.workerName.isEmpty)
    }

    @Test func aLeaseShorterThanTwoHeartbeatsIsRefusedByName() {
        #expect(throws: ValidationFailure.self) { try parse("shards: {lease_seconds: 1, heartbeat_seconds: 1}\n") }
        do {
            _ = try parse("shards: {heartbeat_seconds: 20}\n")
            Issue.record("a heartbeat of 20 s with the default 30 s lease must be refused")
        } catch {
            #expect(error.description.contains("shards.lease_seconds") && error.description.contains("twice"), "\(error)")
        }
        #expect(throws: ValidationFailure.self) { try parse("worker_name: a/b\n") }
        #expect(throws: ValidationFailure.self) { try parse("shards: {images: 0}\n") }
        #expect(throws: ValidationFailure.self) { try parse("shards: {lease: 3}\n") }
    }

    @Test func aSharedOutputFolderMustPassTheProbe() throws {
        let dir = makeTempDir("probe")
        try OutputFolderProbe.check(dir, worker: "w1")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "the probe leaves nothing behind")
        do {
            try OutputFolderProbe.check(dir + "/missing", worker: "w1")
            Issue.record("a missing folder passes the probe")
        } catch {
            #expect(error.description.hasPrefix("output folder \(dir)/missing cannot be shared by workers"), "\(error)")
        }
    }

    @Test func theLeaseAndHeartbeatNeedARestartWhileTheShardSizeReloads() throws {
        let running = try parse("shards: {images: 8, lease_seconds: 3, heartbeat_seconds: 0.5}\nworker_name: a\n")
        let new = try parse("shards: {images: 16, lease_seconds: 6, heartbeat_seconds: 1}\nworker_name: b\n")
        let (applied, restart) = running.reloaded(with: new)
        #expect(applied.shards.images == 16 && applied.shards.leaseSeconds == 3 && applied.workerName == "a")
        #expect(Set(restart) == ["worker_name", "shards.lease_seconds", "shards.heartbeat_seconds"])
    }
}
