import DiffusionDaemon
import Foundation
import Metrics
import Provenance

/// The full provenance record of one job (`diffusionctl show`).
public struct JobReport: Codable, Sendable {
    public var job: JobRow
    public var spec: JobSpec?
    public var content: String
    public var transitions: [TransitionRow]
    public var images: [ImageRow]
    public var metrics: [MetricRow]
    public var environment: EnvironmentRow?
    /// The bundles the job used (UNet, classifier, features) with their content hashes.
    public var models: [JobModelRow]

    public static func build(store: any JobStore, jobID: Int64) throws -> JobReport {
        guard let job = try store.job(id: jobID) else { throw ProvenanceError.noSuchJob(jobID) }
        var images = try store.images(jobID: jobID)
        for i in images.indices { images[i].record = "" } // the record is the spec plus the row; kept out of the report
        return JobReport(job: job, spec: job.spec.flatMap { try? JobSpec.fromJSON($0) },
                         content: String(decoding: try store.jobContent(id: jobID) ?? [], as: UTF8.self),
                         transitions: try store.transitions(jobID: jobID), images: images,
                         metrics: try store.metrics(jobID: jobID),
                         environment: try job.environmentID.flatMap { try store.environment(id: $0) },
                         models: try store.jobModels(jobID: jobID))
    }

    public func render() -> String {
        let f = ISO8601DateFormatter()
        func t(_ x: Double?) -> String { x.map { f.string(from: Date(timeIntervalSince1970: $0)) } ?? "-" }
        var out = ["job \(job.id): \(job.name)",
                   "  state: \(job.state.rawValue)\(job.cancelRequested ? " (cancel requested)" : "")",
                   "  file: \(job.sourceName) (sha256 \(job.contentSHA256))",
                   "  priority \(job.priority), attempts \(job.attempts), images \(images.count)/\(job.totalImages)",
                   "  output: \(job.outputDir ?? "-")"]
        if let e = job.error { out.append("  error: \(e)") }
        if !models.isEmpty {
            out.append("models:")
            for m in models { out.append("  \(m.role.rawValue): \(m.name) (sha256 \(m.sha256))") }
        }
        out.append("transitions:")
        for tr in transitions { out.append("  \(t(tr.at))  \(tr.from?.rawValue ?? "-") -> \(tr.to.rawValue)  \(tr.reason ?? "")") }
        if let spec { out.append("spec:"); out.append(spec.jsonString(pretty: true).split(separator: "\n").map { "  " + $0 }.joined(separator: "\n")) }
        if let env = environment {
            out.append("environment: diffusiond \(env.version) on \(env.host), kernel \(env.kernel) \(env.kernelVersions.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")), \(env.threads) threads")
            if let model = env.details["cpu_model"] {
                out.append("cpu: \(model), caches \(env.details["cpu_caches"] ?? "unknown"); flags \(env.details["cpu_flags"] ?? "unknown")")
            }
        }
        if !metrics.isEmpty {
            out.append("metrics:")
            for m in metrics {
                if m.name == "quality", let report = try? JSONDecoder().decode(QualityReport.self, from: Data(m.details.utf8)) {
                    out.append(report.render().split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
                } else if m.name == "run_seconds" || m.name == "metrics_error" {
                    out.append("  \(m.name) = \(m.value) (n = \(m.n)) \(m.details == "{}" ? "" : m.details)")
                }
            }
        }
        out.append("images:")
        for i in images {
            out.append("  \(String(format: "%5d", i.index))  seed \(i.seed)  \(i.className ?? "-")  \(i.width)x\(i.height) \(i.format) \(i.byteSize) B  \(i.sha256.prefix(16))  \(i.path)")
        }
        return out.joined(separator: "\n")
    }
}
