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
/// thresholds for sgemm and, with one row, sgemv), so that it may be called from inside an
/// OpenMP parallel region.
@inline(__always)
func sgemmIsSingleThreaded(m: Int, n: Int, k: Int) -> Bool { m == 1 ? n * k <= 9_216 : m * n * k <= 262_144 }

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
    let beta: Float = (bias != nil || accumulate) ? 1 : 0
    if rows == 1 {
        // A matrix-vector product: sgemm would pack the whole weight matrix for one row.
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(outFeatures), Int32(inFeatures), 1, weight, Int32(inFeatures), x, 1, beta, y, 1)
        return
    }
    sgemm(transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures, b: weight, ldb: inFeatures,
          beta: beta, c: y, ldc: ldy)
}

/// Runs `product(i)` for items 0..<items, in parallel when each product (`rowsPerItem` x n x k)
/// stays on its calling thread in OpenBLAS. One product per item keeps every item's rows in the
/// same call whatever their place in the batch, so its result does not depend on the batch. (In
/// one big product OpenBLAS may round a row by its offset: its Haswell kernels do, which made
/// images depend on their neighbours on AVX2 machines.)
@inline(__always)
private func forEachItemProduct(items: Int, rowsPerItem: Int, n: Int, k: Int, _ product: (Int) -> Void) {
    let threads = sgemmIsSingleThreaded(m: rowsPerItem, n: n, k: k) ? min(ComputeRuntime.dnnlThreads, items) : 1
    parallelRegion(threads: threads) { tid, nt in
        var i = tid
        while i < items { product(i); i += nt }
    }
}

/// `sgemm` (A not transposed) as one product per item of `rowsPerItem` rows of A and C (see
/// `forEachItemProduct`).
func sgemmPerItem(items: Int, rowsPerItem: Int, n: Int, k: Int,
                  a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                  c: UnsafeMutablePointer<Float>, ldc: Int) {
    forEachItemProduct(items: items, rowsPerItem: rowsPerItem, n: n, k: k) { i in
        sgemm(m: rowsPerItem, n: n, k: k, a: a + i * rowsPerItem * lda, lda: lda, b: b, ldb: ldb, c: c + i * rowsPerItem * ldc, ldc: ldc)
    }
}

/// `linearForward` item by item (see `forEachItemProduct`): y[items * rowsPerItem, out] = x * W^T + b.
func linearForwardPerItem(_ x: UnsafePointer<Float>, items: Int, rowsPerItem: Int, inFeatures: Int, outFeatures: Int,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ y: UnsafeMutablePointer<Float>) {
    forEachItemProduct(items: items, rowsPerItem: rowsPerItem, n: outFeatures, k: inFeatures) { i in
        linearForward(x + i * rowsPerItem * inFeatures, rows: rowsPerItem, inFeatures: inFeatures, outFeatures: outFeatures,
                      weight: weight, bias: bias, y + i * rowsPerItem * outFeatures)
    }
}
