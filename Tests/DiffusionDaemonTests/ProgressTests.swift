import DaemonTestSupport
import DiffusionControl
import DiffusionDaemon
import Foundation
import Provenance
import Testing

/// Progress moves per sampling step, with an ETA, in the heartbeat, `diffusionctl status` and
/// systemd's STATUS=, while the first batch of a job is still being sampled (real daemons).
@Suite(.serialized) struct ProgressTests {
    @Test func stepsOfTheFirstBatchShowInHeartbeatStatusAndNotify() throws {
        // One batch of 8 at 0.5 s an image: 4 s in ten steps, no image written until it ends.
        let h = try DaemonHarness(delayMs: 500, batchSize: 8)
        let socket = try NotifySocket(address: h.root + "/notify.sock")
        h.extraEnvironment = ["NOTIFY_SOCKET": h.root + "/notify.sock"]
        try h.start()
        try h.drop("steps.yml", "name: steps\nclasses: [Trouser]\nimages: 8\nseed: 3\n")
        let store = try h.store()
        var beforeFirstImage: [HeartbeatRow] = []
        var statusLines: [String] = []
        var notices: [String] = []
        let deadline = Date().addingTimeInterval(60)
        while !h.exists("spool/done/steps.yml") && Date() < deadline {
            if let hb = try store.heartbeat(), hb.activeJobID != nil, hb.imagesDone == 0, hb.stepsDone > 0 {
                beforeFirstImage.append(hb)
                let report = try StatusReport.build(store: store, lockDirectory: h.root + "/state")
                statusLines.append(report.render().split(separator: "\n").first { $0.hasPrefix("active:") }.map(String.init) ?? "")
            }
            while let m = socket.receiveNow() { notices.append(m) }
            usleep(150_000)
        }
        #expect(h.exists("spool/done/steps.yml"))
        let steps = Set(beforeFirstImage.map(\.stepsDone))
        #expect(steps.count >= 2, "steps seen before the first image: \(steps.sorted())")
        #expect(beforeFirstImage.allSatisfy { $0.stepsTotal == 10 && $0.batchImages == 8 && $0.etaSeconds != nil })
        // The ETA is the batch's remaining share at its own pace: 4 s in all, so never beyond about 4 s.
        #expect(beforeFirstImage.allSatisfy { ($0.etaSeconds ?? 99) < 8 && $0.imagesPerSecond > 0 }, "\(beforeFirstImage)")
        #expect(statusLines.contains { $0.contains("0/8 images, step ") && $0.contains("of a batch of 8") && $0.contains("ETA") },
                "\(statusLines)")
        let status = notices.filter { $0.hasPrefix("STATUS=running job 1 (steps): 0/8 images, step ") }
        #expect(!status.isEmpty && status.allSatisfy { $0.contains("ETA") }, "\(notices)")
    }
}
