import CBLAS
import DiffusionEngine

/// Errors of the metric computations.
public enum MetricsError: Error, CustomStringConvertible, Equatable {
    /// Too few samples, mismatched widths, or another input the metric cannot use.
    case invalidInput(String)
    /// LAPACK reported a failure.
    case lapack(routine: String, info: Int)
    /// An image could not be read or converted to the network's input.
    case unreadableImage(path: String, reason: String)
    /// A reference statistics file is missing a tensor or has the wrong shapes.
    case invalidReference(String)

    public var description: String {
        switch self {
        case .invalidInput(let m): m
        case .lapack(let r, let info): "LAPACK \(r) failed (info = \(info))"
        case .unreadableImage(let p, let r): "\(p): \(r)"
        case .invalidReference(let m): "reference statistics: \(m)"
        }
    }
}

/// A dense symmetric float64 matrix, row-major (which equals column-major for a symmetric one).
public struct SymmetricMatrix: Sendable, Equatable {
    /// Rows (= columns).
    public let dimension: Int
    /// `dimension * dimension` elements.
    public var values: [Double]

    /// A matrix from its elements; `values` must hold `dimension * dimension` of them.
    public init(dimension: Int, values: [Double]) {
        ensure(values.count == dimension * dimension, "\(values.count) values for a \(dimension)x\(dimension) matrix")
        self.dimension = dimension
        self.values = values
    }

    /// The sum of the diagonal.
    public var trace: Double { (0 ..< dimension).reduce(0) { $0 + values[$1 * dimension + $1] } }

    /// Eigenvalues (ascending) and, when asked, eigenvectors (column j of the row-major result is
    /// the j-th vector) from LAPACK's divide-and-conquer solver dsyevd.
    public func eigendecomposition(vectors: Bool) throws -> (values: [Double], vectors: [Double]?) {
        var n = Int32(dimension), lda = Int32(dimension), info: Int32 = 0
        var a = values
        var w = [Double](repeating: 0, count: dimension)
        var jobz = Int8(UInt8(ascii: vectors ? "V" : "N")), uplo = Int8(UInt8(ascii: "U"))
        // Workspace query, then the solve.
        var workSize = 0.0, iworkSize: Int32 = 0, query: Int32 = -1
        dsyevd_(&jobz, &uplo, &n, &a, &lda, &w, &workSize, &query, &iworkSize, &query, &info)
        guard info == 0 else { throw MetricsError.lapack(routine: "dsyevd (workspace query)", info: Int(info)) }
        var lwork = Int32(workSize), liwork = max(iworkSize, 1)
        var work = [Double](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &n, &a, &lda, &w, &work, &lwork, &iwork, &liwork, &info)
        guard info == 0 else { throw MetricsError.lapack(routine: "dsyevd", info: Int(info)) }
        // LAPACK returns the vectors column-major: element (i, j) at a[j * n + i], i.e. the
        // transpose of a row-major matrix whose columns are the vectors.
        guard vectors else { return (w, nil) }
        var rowMajor = [Double](repeating: 0, count: a.count)
        for i in 0 ..< dimension { for j in 0 ..< dimension { rowMajor[i * dimension + j] = a[j * dimension + i] } }
        return (w, rowMajor)
    }

    /// The symmetric positive semidefinite square root V diag(sqrt(max(λ, 0))) Vᵀ.
    public func squareRoot() throws -> SymmetricMatrix {
        let (lambda, v) = try eigendecomposition(vectors: true)
        let d = dimension
        var scaled = v!
        for i in 0 ..< d { for j in 0 ..< d { scaled[i * d + j] *= max(lambda[j], 0).squareRoot() } }
        var out = [Double](repeating: 0, count: d * d)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(d), Int32(d), Int32(d), 1, scaled, Int32(d), v!, Int32(d), 0, &out, Int32(d))
        return SymmetricMatrix(dimension: d, values: out).symmetrized()
    }

    /// A · B · A for symmetric A (self) and B, symmetrized against round-off.
    public func sandwiching(_ b: SymmetricMatrix) -> SymmetricMatrix {
        let d = Int32(dimension)
        var ab = [Double](repeating: 0, count: values.count), out = ab
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1, values, d, b.values, d, 0, &ab, d)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1, ab, d, values, d, 0, &out, d)
        return SymmetricMatrix(dimension: dimension, values: out).symmetrized()
    }

    /// (M + Mᵀ) / 2.
    public func symmetrized() -> SymmetricMatrix {
        var out = values
        for i in 0 ..< dimension {
            for j in i + 1 ..< dimension {
                let m = 0.5 * (values[i * dimension + j] + values[j * dimension + i])
                out[i * dimension + j] = m; out[j * dimension + i] = m
            }
        }
        return SymmetricMatrix(dimension: dimension, values: out)
    }
}
