// Stage "quality" (BENCHMARKS.md sections 3 and 4, the metrics half): every row of the sampling
// sweep is read back from the sample cache and handed to `measureQuality`, the ONE place where
// quality metrics are computed.
import DiffusionEngine
import Foundation
import Metrics

/// The quality of one row's N samples.
struct QualityRow: Codable, Sendable {
    /// Number of images measured.
    var n: Int
    /// FID against the bundled extractor's reference statistics (models/fashion-mnist-features).
    var fid: Double
    /// FID of N real images against the same reference: the floor that N images can reach.
    var fidDataFloor: Double
    /// KID: mean and standard deviation over subsets.
    var kidMean: Double
    var kidStd: Double
    /// Improved precision and recall (k-nearest-neighbour manifolds in the feature space).
    var precision: Double
    var recall: Double
    /// Fraction of images that a classifier assigns to the class they were asked for.
    var classAccuracy: Double
}

// MARK: - The metrics seam

/// The quality of `images` ([N, C, H, W], values in [-1, 1], the training normalisation), whose
/// image n was sampled for class `requestedClasses[n]` (-1: none), measured by the Metrics module
/// against the features bundle's reference. FID is computed at every N here (the table states N
/// and the data floor at that N beside it).
func measureQuality(images: Tensor, requestedClasses: [Int], evaluator: QualityEvaluator) throws -> QualityRow {
    let extracted = try evaluator.extractor.features(ofInputs: images)
    let r = try evaluator.evaluate(extracted, requestedClasses: requestedClasses.map { $0 < 0 ? nil : $0 })
    guard let fid = r.fid, let kid = r.kid, let pr = r.precisionRecall else {
        throw BenchError("metrics incomplete: \(r.omitted)")
    }
    return QualityRow(n: r.n, fid: fid.value, fidDataFloor: fid.dataFloor ?? .nan, kidMean: kid.mean, kidStd: kid.std,
                      precision: pr.precision, recall: pr.recall, classAccuracy: r.classAccuracy?.value ?? .nan)
}

// MARK: - The stage

struct QualityRowResult: Codable {
    /// The sampling row (its `id` in the sampling stage's rows).
    var id: String
    var quality: QualityRow?
    var error: String?
    var seconds: Double
}

struct QualityResult: Codable {
    var n: Int
    var rows: [QualityRowResult]
}

/// Measures every row of `plan` from the sample cache. Returns nil (with the reason) when the
/// metrics are not available at all, so the stage is recorded as skipped.
func runQualityStage(plan: SweepPlan, options: Options) throws -> (QualityResult?, skipped: String?) {
    var rows: [QualityRowResult] = []
    let evaluator = try QualityEvaluator(featuresBundle: URL(fileURLWithPath: options.models).appendingPathComponent("fashion-mnist-features"),
                                         minimumImagesForFID: 2)
    for (i, row) in plan.rows.enumerated() {
        let path = plan.cachePath(row)
        let t0 = seconds()
        guard FileManager.default.fileExists(atPath: path) else {
            rows.append(QualityRowResult(id: row.id, error: "no samples at \(path) (run the sampling stage)", seconds: 0))
            continue
        }
        do {
            let set = try SampleCache.read(path)
            let q = try measureQuality(images: set.tensor(), requestedClasses: set.requestedClasses, evaluator: evaluator)
            rows.append(QualityRowResult(id: row.id, quality: q, seconds: seconds() - t0))
            log(String(format: "[%d/%d] %@: FID %.2f (floor %.2f), KID %.4f, precision %.3f, recall %.3f, class accuracy %.3f",
                       i + 1, plan.rows.count, row.id, q.fid, q.fidDataFloor, q.kidMean, q.precision, q.recall, q.classAccuracy))
        } catch {
            rows.append(QualityRowResult(id: row.id, error: "\(error)", seconds: seconds() - t0))
            log("[\(i + 1)/\(plan.rows.count)] \(row.id): \(error)")
        }
    }
    return (QualityResult(n: plan.n, rows: rows), nil)
}

/// Features of N images and their metrics take about a second per row at N = 256 (most of it the
/// 100 KID subsets); the data floor is computed once per N.
func expectedQualitySeconds(plan: SweepPlan) -> Double { 10 + 1.5 * Double(plan.rows.count) }
