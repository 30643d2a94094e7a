import Foundation
import ImageCodecs
import Logging
import Provenance

/// The end of a job: its contact sheet and metrics once every image is recorded, and the
/// transition (with the spool file's move) for every way a run can end.
struct JobFinisher: Sendable {
    let store: any JobStore
    let spool: Spool
    let logger: Logger
    /// Measures finished jobs (metrics.json and metric rows).
    let quality = JobQualityMeter()
    let activity: Locked<DaemonActivity>

    /// Contact sheet, then the job's metrics, once every image is recorded.
    func finishOutputs(job: JobRow, spec: JobSpec, directory: String, started: Double, config cfg: DaemonConfig) async {
        guard let rows = try? store.images(jobID: job.id) else { return }
        let sheet = JobContactSheet.render(rows: rows, jobID: job.id, spec: spec)
        if let bytes = try? PNGCodec.encode(sheet, record: EmbeddedRecord(json: nil, parameters: "contact sheet of job \(job.id) \(spec.name)")) {
            try? AtomicFile.write(bytes, to: directory + "/contact-sheet.png")
        }
        guard cfg.metrics.enabled else { return }
        let wall = Date().timeIntervalSince1970 - started
        activity.withLock { $0.status = "measuring job \(job.id) (\(spec.name)): metrics of \(rows.count) images" }
        var metricRows = [MetricRow(jobID: job.id, name: "run_seconds", value: wall, n: rows.count)]
        do {
            let report = try await quality.measure(images: rows, config: cfg)
            let json = try report.jsonData()
            try? store.recordJobModel(JobModelRow(jobID: job.id, role: .features, name: report.featuresModel,
                                                  sha256: report.featuresModelHash))
            try AtomicFile.write([UInt8](json), to: directory + "/metrics.json")
            metricRows += JobQualityMeter.rows(jobID: job.id, report: report, reportJSON: String(decoding: json, as: UTF8.self))
            logger.info("job measured", metadata: [
                "job": "\(job.id)", "n": "\(report.n)", "fid": "\(report.fid.map { String(format: "%.4f", $0.value) } ?? "omitted")",
                "kid": "\(report.kid.map { String(format: "%.5f", $0.mean) } ?? "omitted")",
                "class_accuracy": "\(report.classAccuracy.map { String(format: "%.3f", $0.value) } ?? "-")",
                "seconds": "\(String(format: "%.2f", report.seconds))"])
        } catch {
            // Metrics never fail a job whose images are safely written: the reason is recorded instead.
            logger.warning("job metrics unavailable", metadata: ["job": "\(job.id)", "error": "\(error)"])
            let reason = "metrics unavailable: \(error)"
            let body = (try? JSONSerialization.data(withJSONObject: ["n": rows.count, "error": reason], options: [.prettyPrinted, .sortedKeys])) ?? Data()
            try? AtomicFile.write([UInt8](body), to: directory + "/metrics.json")
            metricRows.append(MetricRow(jobID: job.id, name: "metrics_error", value: 0, n: rows.count,
                                        details: String(decoding: (try? JSONSerialization.data(withJSONObject: ["error": reason])) ?? Data(), as: UTF8.self)))
        }
        do { try store.replaceMetrics(jobID: job.id, with: metricRows) } catch {
            logger.error("cannot record job metrics", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
    }

    /// A run stopped by a shutdown: the job is pending again, its attempt refunded.
    func interrupt(job: JobRow) -> JobOutcome {
        logger.notice("job interrupted by shutdown; it resumes at the next start", metadata: ["job": "\(job.id)"])
        do {
            try store.requeue(jobID: job.id, reason: "daemon shutting down", refundAttempt: true)
        } catch {
            logger.error("cannot requeue job", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
        return .interrupted
    }

    /// Records the end of a run and moves the job file to done/ or failed/.
    func finish(job: JobRow, outcome: JobOutcome, error: String?) -> JobOutcome {
        do {
            switch outcome {
            case .done:
                try store.transition(jobID: job.id, to: .done, reason: "all images written")
                _ = try? spool.finish(spoolName: job.spoolName)
                logger.info("job done", metadata: ["job": "\(job.id)"])
            case .canceled:
                try store.transition(jobID: job.id, to: .canceled, reason: "canceled by user")
                _ = try? spool.fail(spoolName: job.spoolName, error: "canceled by user")
                logger.notice("job canceled", metadata: ["job": "\(job.id)"])
            case .failed:
                try store.transition(jobID: job.id, to: .failed, reason: error, error: error)
                _ = try? spool.fail(spoolName: job.spoolName, error: error ?? "failed")
                logger.error("job failed", metadata: ["job": "\(job.id)", "error": "\(error ?? "")"])
            case .interrupted:
                break
            }
        } catch {
            logger.error("cannot record job outcome", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
        return outcome
    }
}
