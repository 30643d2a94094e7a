import Foundation
import ImageCodecs
import Logging
import Provenance

/// The end of a job: its contact sheet and metrics once every image is recorded, and the
/// transition (with the spool file's move) for every way a run of a claim can end.
struct JobFinisher: Sendable {
    let store: any JobStore
    let spool: Spool
    let logger: Logger
    /// Measures finished jobs (metrics.json and metric rows).
    let quality = JobQualityMeter()
    let activity: Locked<DaemonActivity>
    /// The runner's hold on its claim: a worker that lost it ends nothing of the job.
    let lease: LeaseKeeper

    /// Contact sheet, then the job's metrics, once every image is recorded (by the worker that ends
    /// the last shard: they run once per job).
    func finishOutputs(job: JobRow, spec: JobSpec, directory: String, started: Double, config cfg: DaemonConfig) async {
        guard let rows = try? store.images(jobID: job.id) else { return }
        let sheet = JobContactSheet.render(rows: rows, jobID: job.id, spec: spec)
        if let bytes = try? PNGCodec.encode(sheet, record: EmbeddedRecord(json: nil, parameters: "contact sheet of job \(job.id) \(spec.name)")) {
            try? AtomicFile.write(bytes, to: directory + "/contact-sheet.png")
        }
        guard cfg.metrics.enabled else { return }
        let wall = Date().timeIntervalSince1970 - (job.startedAt ?? started)
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

    /// A run stopped by a shutdown: the shard (on one host, the job) is pending again, its attempt refunded.
    func interrupt(_ claim: ShardClaim) -> JobOutcome {
        logger.notice("shard interrupted by shutdown; it resumes later", metadata: ["job": "\(claim.job.id)", "shard": "\(claim.shard)"])
        do {
            try store.releaseShard(claim, reason: "daemon shutting down", refundAttempt: true)
        } catch {
            logger.error("cannot release shard", metadata: ["job": "\(claim.job.id)", "error": "\(error)"])
        }
        return .interrupted
    }

    /// A run ended by `error`: the lease lost (nothing more is written: the shard's new holder goes
    /// on), the store unreachable while stopping, or else the job fails with `context: error`.
    func end(_ claim: ShardClaim, error: any Error, failing context: String) -> JobOutcome {
        if error is LeaseLost || !lease.isHeld {
            logger.warning("lease lost: this worker stops writing the shard", metadata: [
                "job": "\(claim.job.id)", "shard": "\(claim.shard)", "token": "\(claim.lease.token)", "reason": "\(error)"])
            lease.markLost()
            return .leaseLost
        }
        if store.isUnavailable(error) {
            logger.warning("store unreachable while stopping; the shard's lease runs out and another worker resumes it",
                           metadata: ["job": "\(claim.job.id)", "shard": "\(claim.shard)"])
            return .interrupted
        }
        return finish(claim, outcome: .failed, error: "\(context): \(error)")
    }

    /// Records the end of a run that ends its job (failed or canceled) and moves the job file to
    /// failed/; a worker that no longer holds its lease records nothing (the job is another's now).
    func finish(_ claim: ShardClaim, outcome: JobOutcome, error: String?) -> JobOutcome {
        guard lease.isHeld else { return end(claim, error: LeaseLost(claim), failing: "") }
        let job = claim.job
        do {
            if let now = try store.job(id: job.id), now.state.isFinal {
                // Another worker ended it first (a cancel seen by every worker of the job).
                return outcome
            }
            switch outcome {
            case .canceled:
                try store.transition(jobID: job.id, to: .canceled, reason: "canceled by user")
                _ = try? spool.fail(spoolName: job.spoolName, error: "canceled by user")
                logger.notice("job canceled", metadata: ["job": "\(job.id)"])
            case .failed:
                try store.transition(jobID: job.id, to: .failed, reason: error, error: error)
                _ = try? spool.fail(spoolName: job.spoolName, error: error ?? "failed")
                logger.error("job failed", metadata: ["job": "\(job.id)", "error": "\(error ?? "")"])
            case .done, .interrupted, .shardDone, .leaseLost:
                break
            }
        } catch {
            logger.error("cannot record job outcome", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
        return outcome
    }
}
