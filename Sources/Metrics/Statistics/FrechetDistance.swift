/// The Fréchet distance between two Gaussians fitted to feature sets (FID when the features are
/// those of a fixed network): ‖μ₁ - μ₂‖² + tr Σ₁ + tr Σ₂ - 2 tr (Σ₁ Σ₂)^½.
///
/// tr (Σ₁ Σ₂)^½ is the sum of the square roots of the eigenvalues of the symmetric
/// Σ₁^½ Σ₂ Σ₁^½ (they equal those of Σ₁ Σ₂), both from LAPACK's float64 dsyevd, negative
/// round-off clamped to 0. Unlike a Cholesky route it works for singular covariances (fewer
/// samples than feature dimensions).
public enum FrechetDistance {
    /// The distance between the Gaussians of `a` and `b`.
    public static func between(_ a: FeatureStatistics, _ b: FeatureStatistics) throws -> Double {
        let d = a.mean.count
        guard d == b.mean.count else { throw MetricsError.invalidInput("feature widths differ: \(d) and \(b.mean.count)") }
        var meanTerm = 0.0
        for j in 0 ..< d { let t = a.mean[j] - b.mean[j]; meanTerm += t * t }
        let root = try a.covariance.squareRoot()
        let eigen = try root.sandwiching(b.covariance).eigendecomposition(vectors: false).values
        let traceOfRoot = eigen.reduce(0) { $0 + max($1, 0).squareRoot() }
        return meanTerm + a.covariance.trace + b.covariance.trace - 2 * traceOfRoot
    }
}
