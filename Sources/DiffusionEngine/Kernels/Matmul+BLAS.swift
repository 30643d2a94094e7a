import CBLAS

/// Row-major single-precision matrix product through OpenBLAS:
/// C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C.
@inline(__always)
func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Float = 1,
           a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
           beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Whether OpenBLAS runs a product of this size on the calling thread only (its small-size
/// threshold), so that it may be called from inside an OpenMP parallel region.
@inline(__always)
func sgemmIsSingleThreaded(m: Int, n: Int, k: Int) -> Bool { m * n * k <= 262_144 }

/// y[rows, out] = x[rows, in] * W^T + b, with W stored [out, in] (PyTorch Linear / 1x1 conv).
func linearForward(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int,
                   weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ y: UnsafeMutablePointer<Float>,
                   ldy: Int? = nil, accumulate: Bool = false) {
    let ldy = ldy ?? outFeatures
    if let bias, !accumulate {
        for r in 0..<rows { (y + r * ldy).update(from: bias, count: outFeatures) }
    } else if let bias {
        for r in 0..<rows { for o in 0..<outFeatures { y[r * ldy + o] += bias[o] } }
    }
    sgemm(transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: weight, ldb: inFeatures,
          beta: (bias != nil || accumulate) ? 1 : 0, c: y, ldc: ldy)
}
