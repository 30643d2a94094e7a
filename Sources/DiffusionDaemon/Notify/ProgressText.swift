import Foundation
import Provenance

/// One wording of a job's progress, for systemd's STATUS=, `diffusionctl status` and the log.
public enum ProgressText {
    /// "3/16 images, step 37/50 of a batch of 8, 0.12 img/s, ETA 1m40s" from a heartbeat.
    public static func line(_ hb: HeartbeatRow) -> String {
        line(imagesDone: hb.imagesDone, imagesTotal: hb.imagesTotal, batchImages: hb.batchImages, stepsDone: hb.stepsDone,
             stepsTotal: hb.stepsTotal, imagesPerSecond: hb.imagesPerSecond, etaSeconds: hb.etaSeconds)
    }

    /// The same from its parts.
    public static func line(imagesDone: Int, imagesTotal: Int, batchImages: Int, stepsDone: Int, stepsTotal: Int,
                            imagesPerSecond: Double, etaSeconds: Double?) -> String {
        var parts = ["\(imagesDone)/\(imagesTotal) images"]
        if stepsTotal > 0 && stepsDone < stepsTotal {
            parts.append("step \(stepsDone)/\(stepsTotal) of a batch of \(batchImages)")
        }
        if imagesPerSecond > 0 { parts.append(imagesPerSecond >= 0.1 ? String(format: "%.2f img/s", imagesPerSecond)
                                                                      : String(format: "%.1f s/img", 1 / imagesPerSecond)) }
        if let etaSeconds { parts.append("ETA \(duration(etaSeconds))") }
        return parts.joined(separator: ", ")
    }

    /// "42s", "3m05s", "2h10m".
    public static func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s.rounded())
        if t < 60 { return "\(t)s" }
        if t < 3600 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
        return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m"
    }
}
