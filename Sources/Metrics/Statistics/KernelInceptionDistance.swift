import CBLAS
import DiffusionEngine

/// The kernel inception distance (Bińkowski et al. 2018): the unbiased estimate of the squared
/// MMD under the polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over random subsets.
public enum KernelInceptionDistance {
    /// Mean and standard deviation over subsets, and the subsets used.
    public struct Estimate: Sendable, Equatable, Codable {
        /// Mean of the per-subset estimates.
        public var mean: Double
        /// Their standard deviation (population, as torch-fidelity and clean-fid report it).
        public var std: Double
        /// Number of subsets.
        public var subsets: Int
        /// Samples drawn from each set per subset.
        public var subsetSize: Int
    }

    /// Seed of the subset draws (fixed, so that a metric is a function of the two sets).
    public static let seed: UInt64 = 0

    /// KID between `a` and `b` over `subsets` subsets of min(`subsetSize`, |a|, |b|) samples of
    /// each, drawn without replacement (for a, then for b, per subset) by `SubsetSampler(seed:)`.
    public static func estimate(_ a: FeatureMatrix, _ b: FeatureMatrix, subsets: Int = 100, subsetSize: Int = 1000) throws -> Estimate {
        guard a.dimension == b.dimension else { throw MetricsError.invalidInput("feature widths differ: \(a.dimension) and \(b.dimension)") }
        let m = min(subsetSize, a.count, b.count)
        guard m >= 2 else { throw MetricsError.invalidInput("KID needs at least 2 samples in each set, got \(a.count) and \(b.count)") }
        guard subsets >= 1 else { throw MetricsError.invalidInput("KID needs at least one subset") }
        var sampler = SubsetSampler(seed: seed)
        var values: [Double] = []
        values.reserveCapacity(subsets)
        for _ in 0 ..< subsets {
            let x = a.rows(sampler.subset(of: a.count, size: m))
            let y = b.rows(sampler.subset(of: b.count, size: m))
            values.append(unbiasedMMD(x, y))
        }
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
        return Estimate(mean: mean, std: variance.squareRoot(), subsets: subsets, subsetSize: m)
    }

    /// The unbiased squared MMD between two sets of equal size m ≥ 2:
    /// mean of k(x, x') and of k(y, y') over distinct pairs, minus twice the mean of k(x, y).
    public static func unbiasedMMD(_ x: FeatureMatrix, _ y: FeatureMatrix) -> Double {
        let m = x.count
        ensure(y.count == m && m >= 2, "unbiased MMD needs two sets of equal size >= 2")
        let kxx = kernelSum(x, x, excludingDiagonal: true), kyy = kernelSum(y, y, excludingDiagonal: true)
        let kxy = kernelSum(x, y, excludingDiagonal: false)
        let md = Double(m)
        return (kxx + kyy) / (md * (md - 1)) - 2 * kxy / (md * md)
    }

    /// Σ k(xᵢ, yⱼ) over all pairs (or all i ≠ j), with float64 dot products.
    static func kernelSum(_ x: FeatureMatrix, _ y: FeatureMatrix, excludingDiagonal: Bool) -> Double {
        let m = x.count, n = y.count, d = x.dimension
        var dot = [Double](repeating: 0, count: m * n)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(d), 1, x.doubles, Int32(d), y.doubles, Int32(d), 0, &dot, Int32(n))
        let scale = 1 / Double(d)
        var sum = 0.0
        for i in 0 ..< m {
            for j in 0 ..< n where !(excludingDiagonal && i == j) {
                let k = dot[i * n + j] * scale + 1
                sum += k * k * k
            }
        }
        return sum
    }
}
