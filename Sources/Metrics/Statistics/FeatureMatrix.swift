import CBLAS
import DiffusionEngine

/// Feature vectors of a set of images: `count` rows of `dimension` float32 values, row-major.
public struct FeatureMatrix: Sendable, Equatable {
    /// Number of rows (images).
    public let count: Int
    /// Width of each row.
    public let dimension: Int
    /// `count * dimension` values.
    public var values: [Float]

    /// A matrix from its values; `values` must hold `count * dimension` of them.
    public init(count: Int, dimension: Int, values: [Float]) {
        ensure(values.count == count * dimension, "\(values.count) values for \(count) rows of \(dimension)")
        self.count = count
        self.dimension = dimension
        self.values = values
    }

    /// The rows at `indices`, in that order.
    public func rows(_ indices: some Collection<Int>) -> FeatureMatrix {
        var out = [Float]()
        out.reserveCapacity(indices.count * dimension)
        for i in indices { out.append(contentsOf: values[i * dimension ..< (i + 1) * dimension]) }
        return FeatureMatrix(count: indices.count, dimension: dimension, values: out)
    }

    /// The first `n` rows.
    public func prefix(_ n: Int) -> FeatureMatrix { rows(0 ..< min(n, count)) }

    /// The rows as float64, row-major.
    var doubles: [Double] { values.map(Double.init) }

    /// Squared Euclidean distances between every row of `self` (rows of the result) and of
    /// `other` (columns), in float64: |a|² + |b|² - 2 a·b, clamped at 0.
    func squaredDistances(to other: FeatureMatrix, rows range: Range<Int>) -> [Double] {
        let a = Array(doubles[range.lowerBound * dimension ..< range.upperBound * dimension])
        let b = other.doubles
        let m = range.count, n = other.count, d = dimension
        var dot = [Double](repeating: 0, count: m * n)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(d), 1, a, Int32(d), b, Int32(d), 0, &dot, Int32(n))
        let na = (0 ..< m).map { i in (0 ..< d).reduce(0.0) { $0 + a[i * d + $1] * a[i * d + $1] } }
        let nb = (0 ..< n).map { j in (0 ..< d).reduce(0.0) { $0 + b[j * d + $1] * b[j * d + $1] } }
        for i in 0 ..< m { for j in 0 ..< n { dot[i * n + j] = max(na[i] + nb[j] - 2 * dot[i * n + j], 0) } }
        return dot
    }
}

/// Mean and covariance of a set of feature vectors, accumulated in float64.
public struct FeatureStatistics: Sendable, Equatable {
    /// Number of vectors summarized.
    public let count: Int
    /// The mean vector.
    public var mean: [Double]
    /// The covariance with the N - 1 denominator (as numpy's `np.cov`).
    public var covariance: SymmetricMatrix

    /// Statistics from a mean and covariance computed elsewhere.
    public init(count: Int, mean: [Double], covariance: SymmetricMatrix) {
        ensure(mean.count == covariance.dimension, "mean of \(mean.count) for a \(covariance.dimension)-d covariance")
        self.count = count
        self.mean = mean
        self.covariance = covariance
    }

    /// The statistics of the rows of `features` (at least two rows).
    public init(_ features: FeatureMatrix) throws {
        let n = features.count, d = features.dimension
        guard n >= 2 else { throw MetricsError.invalidInput("a covariance needs at least 2 feature vectors, got \(n)") }
        var centered = features.doubles
        var mean = [Double](repeating: 0, count: d)
        for i in 0 ..< n { for j in 0 ..< d { mean[j] += centered[i * d + j] } }
        for j in 0 ..< d { mean[j] /= Double(n) }
        for i in 0 ..< n { for j in 0 ..< d { centered[i * d + j] -= mean[j] } }
        var cov = [Double](repeating: 0, count: d * d)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(d), Int32(n), 1 / Double(n - 1), centered, Int32(d), 0, &cov, Int32(d))
        for i in 0 ..< d { for j in 0 ..< i { cov[i * d + j] = cov[j * d + i] } }
        self.init(count: n, mean: mean, covariance: SymmetricMatrix(dimension: d, values: cov))
    }
}
