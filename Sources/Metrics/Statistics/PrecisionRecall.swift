/// Improved precision and recall (Kynkäänniemi et al. 2019): the manifold of a set is the union of
/// balls around its samples reaching their k-th nearest neighbour within the set.
public enum PrecisionRecall {
    /// Precision, recall and the sizes they were measured at.
    public struct Estimate: Sendable, Equatable, Codable {
        /// Fraction of generated samples inside the real manifold.
        public var precision: Double
        /// Fraction of real samples inside the generated manifold.
        public var recall: Double
        /// The neighbourhood size.
        public var k: Int
    }

    /// Precision and recall of `generated` against `real`, neighbourhood size `k` (both sets need
    /// more than k samples). Distances are Euclidean, in float64; a point on a ball's surface is inside.
    public static func estimate(real: FeatureMatrix, generated: FeatureMatrix, k: Int = 3) throws -> Estimate {
        guard real.dimension == generated.dimension else {
            throw MetricsError.invalidInput("feature widths differ: \(real.dimension) and \(generated.dimension)")
        }
        guard real.count > k, generated.count > k else {
            throw MetricsError.invalidInput("precision and recall with k = \(k) need more than \(k) samples in each set, got \(real.count) real and \(generated.count) generated")
        }
        let realRadii = kthNeighbourRadii(real, k: k), generatedRadii = kthNeighbourRadii(generated, k: k)
        return Estimate(precision: coverage(of: generated, by: real, radii: realRadii),
                        recall: coverage(of: real, by: generated, radii: generatedRadii), k: k)
    }

    /// Rows are processed in blocks so that the distance matrices stay small.
    static let blockRows = 256

    /// For each row, the squared distance to its k-th nearest other row.
    static func kthNeighbourRadii(_ set: FeatureMatrix, k: Int) -> [Double] {
        var radii = [Double](repeating: 0, count: set.count)
        var start = 0
        while start < set.count {
            let rows = start ..< min(start + blockRows, set.count)
            let d = set.squaredDistances(to: set, rows: rows)
            for (r, i) in rows.enumerated() {
                // The k + 1 smallest distances of row i (itself at 0 among them).
                var smallest = [Double](repeating: .infinity, count: k + 1)
                for j in 0 ..< set.count {
                    let v = j == i ? 0 : d[r * set.count + j]
                    if v < smallest[k] {
                        var p = k
                        while p > 0 && smallest[p - 1] > v { smallest[p] = smallest[p - 1]; p -= 1 }
                        smallest[p] = v
                    }
                }
                radii[i] = smallest[k]
            }
            start = rows.upperBound
        }
        return radii
    }

    /// Fraction of the rows of `points` within the ball of at least one row of `centres`.
    static func coverage(of points: FeatureMatrix, by centres: FeatureMatrix, radii: [Double]) -> Double {
        var inside = 0, start = 0
        while start < points.count {
            let rows = start ..< min(start + blockRows, points.count)
            let d = points.squaredDistances(to: centres, rows: rows)
            for r in 0 ..< rows.count {
                for j in 0 ..< centres.count where d[r * centres.count + j] <= radii[j] { inside += 1; break }
            }
            start = rows.upperBound
        }
        return Double(inside) / Double(points.count)
    }
}
