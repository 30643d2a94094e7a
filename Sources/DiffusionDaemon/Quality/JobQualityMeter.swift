import Foundation
import ImageCodecs
import Metrics
import Provenance

/// Measures the images of finished jobs with a features bundle (FID, KID, precision/recall, class
/// accuracy; see the Metrics module) on a thread of its own, keeping the loaded evaluator.
final class JobQualityMeter: @unchecked Sendable {
    private let compute = ComputeThread(name: "diffusiond-metrics")
    private var evaluators: [String: QualityEvaluator] = [:]
    private let lock = NSLock()

    /// The evaluator of `featuresModel` in `modelsDirectory` (loaded and checksum-verified on first use).
    private func evaluator(modelsDirectory: String, featuresModel: String, minimumImages: Int) throws -> QualityEvaluator {
        let key = "\(modelsDirectory)/\(featuresModel)#\(minimumImages)"
        lock.lock(); defer { lock.unlock() }
        if let e = evaluators[key] { return e }
        let e = try QualityEvaluator(featuresBundle: URL(fileURLWithPath: modelsDirectory).appendingPathComponent(featuresModel, isDirectory: true),
                                     minimumImagesForFID: minimumImages)
        evaluators[key] = e
        return e
    }

    /// Reads the job's image files and measures them.
    func measure(images rows: [ImageRow], config: DaemonConfig) async throws -> QualityReport {
        try await compute.run { [self] in
            let evaluator = try evaluator(modelsDirectory: config.models, featuresModel: config.metrics.featuresModel,
                                          minimumImages: config.metrics.minImages)
            var images: [RasterImage] = [], classes: [Int?] = []
            images.reserveCapacity(rows.count)
            for row in rows {
                do { images.append(try ImageFile.read(path: row.path).image) } catch {
                    throw MetricsError.unreadableImage(path: row.path, reason: "\(error)")
                }
                classes.append(row.classIndex)
            }
            return try evaluator.evaluate(images: images, requestedClasses: classes)
        }
    }

    /// The database rows of a report: one per metric, and `quality` holding the whole report.
    static func rows(jobID: Int64, report: QualityReport, reportJSON: String) -> [MetricRow] {
        func json(_ object: [String: Any?]) -> String {
            let present = object.compactMapValues { $0 }
            return (try? JSONSerialization.data(withJSONObject: present, options: [.sortedKeys])).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        }
        var rows = [MetricRow(jobID: jobID, name: "quality", value: Double(report.n), n: report.n, details: reportJSON)]
        if let f = report.fid {
            rows.append(MetricRow(jobID: jobID, name: "fid", value: f.value, n: f.n,
                                  details: json(["data_floor": f.dataFloor, "data_floor_n": f.dataFloorN, "reference": report.reference])))
        }
        if let k = report.kid {
            rows.append(MetricRow(jobID: jobID, name: "kid", value: k.mean, n: report.n,
                                  details: json(["std": k.std, "subsets": k.subsets, "subset_size": k.subsetSize, "data_floor_mean": k.dataFloorMean])))
        }
        if let p = report.precisionRecall {
            rows.append(MetricRow(jobID: jobID, name: "precision", value: p.precision, n: report.n,
                                  details: json(["k": p.k, "reference_n": p.referenceN, "data_floor": p.dataFloorPrecision])))
            rows.append(MetricRow(jobID: jobID, name: "recall", value: p.recall, n: report.n,
                                  details: json(["k": p.k, "reference_n": p.referenceN, "data_floor": p.dataFloorRecall])))
        }
        if let a = report.classAccuracy {
            rows.append(MetricRow(jobID: jobID, name: "class_accuracy", value: a.value, n: a.n,
                                  details: json(["real_image_accuracy": a.realImageAccuracy])))
        }
        for c in report.perClass {
            rows.append(MetricRow(jobID: jobID, name: "class_accuracy/\(c.index)", value: c.accuracy, n: c.n,
                                  details: json(["class": c.name, "fid": c.fid, "fid_data_floor": c.fidDataFloor])))
        }
        return rows
    }
}

extension QualityReport {
    /// Pretty-printed JSON with sorted keys (metrics.json, `diffusionctl metrics --json`).
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try encoder.encode(self)
    }
}
