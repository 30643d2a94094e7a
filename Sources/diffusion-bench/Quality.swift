// Stage "quality" (BENCHMARKS.md sections 3 and 4, the metrics half): every row of the sampling
// sweep is read back from the sample cache and handed to `measureQuality`, the ONE place where
// quality metrics are computed.
import DiffusionEngine
import Foundation

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

/// Thrown by the temporary `measureQuality` below; the quality stage reports it as a skip.
struct QualityMetricsUnavailable: Error, CustomStringConvertible {
    var description: String { "quality metrics need the Metrics module" }
}

// MARK: - The metrics seam

/// The quality of `images` ([N, C, H, W], values in [-1, 1], the training normalisation), whose
/// image n was sampled for class `requestedClasses[n]` (-1: none).
///
/// TEMPORARY: until the Metrics module (Sources/Metrics) exists this throws
/// `QualityMetricsUnavailable` ("quality metrics need the Metrics module") and the quality stage
/// is skipped with that message. Replace the body with the Metrics module's computation (add
/// "Metrics" to the diffusion-bench target's dependencies); state such as the feature network or
/// the reference statistics can live in a lazily built global. Nothing else in the benchmark
/// needs to change: the stage, results.json, the report and the plots already carry every field.
func measureQuality(images: Tensor, requestedClasses: [Int]) throws -> QualityRow {
    throw QualityMetricsUnavailable()
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
    for (i, row) in plan.rows.enumerated() {
        let path = plan.cachePath(row)
        let t0 = seconds()
        guard FileManager.default.fileExists(atPath: path) else {
            rows.append(QualityRowResult(id: row.id, error: "no samples at \(path) (run the sampling stage)", seconds: 0))
            continue
        }
        do {
            let set = try SampleCache.read(path)
            let q = try measureQuality(images: set.tensor(), requestedClasses: set.requestedClasses)
            rows.append(QualityRowResult(id: row.id, quality: q, seconds: seconds() - t0))
            log(String(format: "[%d/%d] %@: FID %.2f (floor %.2f), KID %.4f, precision %.3f, recall %.3f, class accuracy %.3f",
                       i + 1, plan.rows.count, row.id, q.fid, q.fidDataFloor, q.kidMean, q.precision, q.recall, q.classAccuracy))
        } catch let e as QualityMetricsUnavailable {
            return (nil, e.description)
        } catch {
            rows.append(QualityRowResult(id: row.id, error: "\(error)", seconds: seconds() - t0))
            log("[\(i + 1)/\(plan.rows.count)] \(row.id): \(error)")
        }
    }
    return (QualityResult(n: plan.n, rows: rows), nil)
}

/// A guess until the metrics exist: features of N images take well under a second per row; the
/// data floor and the reference statistics are computed once.
func expectedQualitySeconds(plan: SweepPlan) -> Double { 20 + 1.0 * Double(plan.rows.count) }
