/// GroupNorm over NHWC activations ([batch, pixels, channels]), float32 data with float64
/// group reductions: statistics, the fused normalise + per-sample scale/shift + SiLU pass of
/// ADM ResBlocks, and its backward pass. Channels must be a multiple of 16.

/// Per-sample, per-group mean and 1/sqrt(var + eps) of `x`, optionally after adding a
/// per-(sample, channel) constant `addend[n * addendStride + c]` (the ResBlock timestep term).
func groupNormStatistics(_ x: UnsafePointer<Float>, batch: Int, pixels: Int, channels: Int, groups: Int,
                         addend: UnsafePointer<Float>? = nil, addendStride: Int = 0, eps: Float = 1e-5,
                         mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>) {
    precondition(channels % 16 == 0 && channels % groups == 0)
    let cpg = channels / groups
    parallelFor(batch, work: batch * pixels * channels) { range in
        // Per group: element count, mean and sum of squared deviations, merged channel by
        // channel (Chan et al.); 3 x groups doubles stay on the stack.
        withUnsafeTemporaryAllocation(of: Double.self, capacity: 3 * groups) { tmp in
            let gn = tmp.baseAddress!, gm = gn + groups, gq = gm + groups
            for n in range {
                gn.update(repeating: 0, count: 3 * groups)
                let base = UnsafeMutablePointer(mutating: x) + n * pixels * channels
                for j in stride(from: 0, to: channels, by: 16) {
                    let k = base.vec(j)
                    var s1a = Vec(), s1b = Vec(), s2a = Vec(), s2b = Vec()
                    var p = 0
                    while p + 1 < pixels {
                        let d0 = base.vec(p * channels + j) - k
                        let d1 = base.vec((p + 1) * channels + j) - k
                        s1a += d0; s2a += d0 * d0
                        s1b += d1; s2b += d1 * d1
                        p += 2
                    }
                    if p < pixels {
                        let d0 = base.vec(p * channels + j) - k
                        s1a += d0; s2a += d0 * d0
                    }
                    let s1 = s1a + s1b, s2 = s2a + s2b
                    let count = Double(pixels)
                    for l in 0..<16 {
                        let a = Double(s1[l]), q = Double(s2[l])
                        let add = addend.map { Double($0[n * addendStride + j + l]) } ?? 0
                        let mean = Double(k[l]) + a / count + add
                        let m2 = max(q - a * a / count, 0)
                        let g = (j + l) / cpg
                        let na = gn[g], total = na + count
                        let delta = mean - gm[g]
                        gm[g] += delta * count / total
                        gq[g] += m2 + delta * delta * na * count / total
                        gn[g] = total
                    }
                }
                for g in 0..<groups {
                    mean[n * groups + g] = Float(gm[g])
                    rstd[n * groups + g] = Float(1 / (gq[g] / gn[g] + Double(eps)).squareRoot())
                }
            }
        }
    }
}

/// Folds GroupNorm statistics, the affine parameters and an optional ADM scale/shift into
/// per-(sample, channel) coefficients: y = act(x * a + b) equals
/// act((GN(x + addend) * gamma + beta) * (1 + scale) + shift).
/// `effectiveGamma` (optional) receives gamma * (1 + scale) for the backward pass.
func groupNormCoefficients(batch: Int, channels: Int, groups: Int,
                           mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                           gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>,
                           addend: UnsafePointer<Float>? = nil, addendStride: Int = 0,
                           scale: UnsafePointer<Float>? = nil, shift: UnsafePointer<Float>? = nil, scaleStride: Int = 0,
                           a: UnsafeMutablePointer<Float>, b: UnsafeMutablePointer<Float>,
                           effectiveGamma: UnsafeMutablePointer<Float>? = nil) {
    let cpg = channels / groups
    for n in 0..<batch {
        for c in 0..<channels {
            let g = n * groups + c / cpg
            let add = addend.map { $0[n * addendStride + c] } ?? 0
            let s = scale.map { 1 + $0[n * scaleStride + c] } ?? 1
            let sh = shift.map { $0[n * scaleStride + c] } ?? 0
            let r = rstd[g]
            let ge = gamma[c] * s
            a[n * channels + c] = r * ge
            b[n * channels + c] = ((add - mean[g]) * r * gamma[c] + beta[c]) * s + sh
            effectiveGamma?[n * channels + c] = ge
        }
    }
}

/// y = act(x * a[n, c] + b[n, c]) over NHWC data; `y` may equal `x`.
func affineActivation(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, pixels: Int, channels: Int,
                      a: UnsafePointer<Float>, b: UnsafePointer<Float>, silu: Bool) {
    let rows = batch * pixels
    let xm = UnsafeMutablePointer(mutating: x)
    let am = UnsafeMutablePointer(mutating: a), bm = UnsafeMutablePointer(mutating: b)
    parallelFor(rows, work: rows * channels) { range in
        for r in range {
            let n = r / pixels
            let o = r * channels, co = n * channels
            var j = 0
            while j < channels {
                let u = xm.vec(o + j) * am.vec(co + j) + bm.vec(co + j)
                y.setVec(o + j, silu ? vsilu(u) : u)
                j += 16
            }
        }
    }
}

/// Backward of y = act(GN(x + addend) * g' + b') for one GroupNorm: writes (or adds, with
/// `accumulate`) dL/dx given dL/dy. `a`, `b` are the forward coefficients, `effectiveGamma`
/// g', and `mean`/`rstd` the forward statistics.
func groupNormBackward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                       batch: Int, pixels: Int, channels: Int, groups: Int,
                       a: UnsafePointer<Float>, b: UnsafePointer<Float>, effectiveGamma: UnsafePointer<Float>,
                       mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                       addend: UnsafePointer<Float>? = nil, addendStride: Int = 0,
                       silu: Bool, accumulate: Bool, scratch: UnsafeMutablePointer<Float>) {
    let cpg = channels / groups
    let xm = UnsafeMutablePointer(mutating: x), dym = UnsafeMutablePointer(mutating: dy)
    let am = UnsafeMutablePointer(mutating: a), bm = UnsafeMutablePointer(mutating: b)
    let threads = min(ComputeRuntime.dnnlThreads, batch)
    parallelRegion(threads: batch * pixels * channels < 32_768 ? 1 : threads) { tid, nt in
        let range = (batch * tid / nt)..<(batch * (tid + 1) / nt)
        do {
            let s1 = scratch + tid * 5 * channels, s2 = s1 + channels
            let alpha = s2 + channels, betaC = alpha + channels, gammaC = betaC + channels
            for n in range {
                let o = n * pixels * channels, co = n * channels
                for j in stride(from: 0, to: channels, by: 16) {
                    let av = am.vec(co + j), bv = bm.vec(co + j)
                    var acc1 = Vec(), acc2 = Vec()
                    for p in 0..<pixels {
                        let xv = xm.vec(o + p * channels + j)
                        var du = dym.vec(o + p * channels + j)
                        if silu { du *= vsiluGrad(xv * av + bv) }
                        acc1 += du; acc2 += du * xv
                    }
                    s1.setVec(j, acc1); s2.setVec(j, acc2)
                }
                for g in 0..<groups {
                    let gi = n * groups + g
                    let r = Double(rstd[gi]), mu = Double(mean[gi])
                    var m1 = 0.0, m2 = 0.0
                    for c in (g * cpg)..<((g + 1) * cpg) {
                        let ge = Double(effectiveGamma[co + c])
                        let add = addend.map { Double($0[n * addendStride + c]) } ?? 0
                        let xa = r, xb = (add - mu) * r
                        m1 += ge * Double(s1[c])
                        m2 += ge * (xa * Double(s2[c]) + xb * Double(s1[c]))
                    }
                    let count = Double(pixels * cpg)
                    m1 /= count; m2 /= count
                    for c in (g * cpg)..<((g + 1) * cpg) {
                        let ge = Double(effectiveGamma[co + c])
                        let add = addend.map { Double($0[n * addendStride + c]) } ?? 0
                        let xa = r, xb = (add - mu) * r
                        alpha[c] = Float(r * ge)
                        betaC[c] = Float(-r * xa * m2)
                        gammaC[c] = Float(-r * (m1 + xb * m2))
                    }
                }
                for p in 0..<pixels {
                    let row = o + p * channels
                    for j in stride(from: 0, to: channels, by: 16) {
                        let xv = xm.vec(row + j)
                        var du = dym.vec(row + j)
                        if silu { du *= vsiluGrad(xv * am.vec(co + j) + bm.vec(co + j)) }
                        var g = du * alpha.vec(j) + xv * betaC.vec(j) + gammaC.vec(j)
                        if accumulate { g += dx.vec(row + j) }
                        dx.setVec(row + j, g)
                    }
                }
            }
        }
    }
}
