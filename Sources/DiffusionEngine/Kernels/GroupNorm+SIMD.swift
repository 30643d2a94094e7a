import CDNNL

/// GroupNorm over activations in oneDNN's 16-channel blocked layout (nChw16c: [batch][channels/16]
/// [pixels][16]), float32 data with float64 group reductions: statistics, the fused normalise +
/// per-sample scale/shift + SiLU pass of ADM ResBlocks, and its backward pass. Channels must be a
/// multiple of 16; `channels / groups` channels form a group. The forward passes also read
/// channels-last input ([batch][pixels][channels], what AMX convolutions write), visiting the
/// same 16 channels of each pixel in the same order: the same bits in either layout.

/// Where the 16 channels `16 * block ..< 16 * block + 16` of pixel 0 of image `n` lie, and the
/// distance in floats from one pixel's 16 channels to the next's.
@inline(__always)
private func channelBlock<T>(_ x: UnsafeMutablePointer<T>, _ layout: ActivationLayout, image n: Int, block: Int,
                             pixels: Int, channels: Int) -> (base: UnsafeMutablePointer<T>, pixelStride: Int) {
    layout == .nhwc ? (x + n * pixels * channels + block * 16, channels)
                    : (x + (n * channels / 16 + block) * pixels * 16, 16)
}

/// Per-sample, per-group mean and 1/sqrt(var + eps) of `x`, optionally after adding a
/// per-(sample, channel) constant `addend[n * addendStride + c]` (the ResBlock timestep term).
func groupNormStatistics(_ x: UnsafePointer<Float>, batch: Int, pixels: Int, channels: Int, groups: Int,
                         addend: UnsafePointer<Float>? = nil, addendStride: Int = 0, eps: Float = 1e-5,
                         mean: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>, layout: ActivationLayout = .blocked16) {
    ensure(channels % 16 == 0 && channels % groups == 0 && layout != .nchw)
    let cpg = channels / groups, blocks = channels / 16
    parallelFor(batch, work: batch * pixels * channels) { range in
        // Per group: element count, mean and sum of squared deviations, merged channel by
        // channel (Chan et al.); 3 x groups doubles stay on the stack.
        withUnsafeTemporaryAllocation(of: Double.self, capacity: 3 * groups) { tmp in
            let gn = tmp.baseAddress!, gm = gn + groups, gq = gm + groups
            for n in range {
                gn.update(repeating: 0, count: 3 * groups)
                for blk in 0..<blocks {
                    let (base, ps) = channelBlock(UnsafeMutablePointer(mutating: x), layout, image: n, block: blk,
                                                  pixels: pixels, channels: channels)
                    let k = base.vec(0)
                    var s1a = Vec(), s1b = Vec(), s2a = Vec(), s2b = Vec()
                    var p = 0
                    while p + 1 < pixels {
                        let d0 = base.vec(p * ps) - k
                        let d1 = base.vec(p * ps + ps) - k
                        s1a += d0; s2a += d0 * d0
                        s1b += d1; s2b += d1 * d1
                        p += 2
                    }
                    if p < pixels {
                        let d0 = base.vec(p * ps) - k
                        s1a += d0; s2a += d0 * d0
                    }
                    let s1 = s1a + s1b, s2 = s2a + s2b
                    let count = Double(pixels)
                    for l in 0..<16 {
                        let c = blk * 16 + l
                        let a = Double(s1[l]), q = Double(s2[l])
                        let add = addend.map { Double($0[n * addendStride + c]) } ?? 0
                        let mu = Double(k[l]) + a / count + add
                        let m2 = max(q - a * a / count, 0)
                        let g = c / cpg
                        let na = gn[g], total = na + count
                        let delta = mu - gm[g]
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

/// Runs `body(plane, image, block, a, b, source, pixelStride)` for every (image, 16-channel block)
/// plane of `x` (blocked or channels-last) in parallel, with the plane's coefficients of act(x * a + b). Each plane first
/// prefetches its share of `prefetch` (the next convolution's weights): the pass is bound by its
/// arithmetic, so the weights arrive while it computes instead of while the convolution waits.
@inline(__always)
private func forEachAffinePlane(_ x: UnsafePointer<Float>, batch: Int, pixels: Int, channels: Int, layout: ActivationLayout,
                                a: UnsafePointer<Float>, b: UnsafePointer<Float>, prefetch: UnsafeRawBufferPointer? = nil,
                                _ body: (Int, Int, Int, Vec, Vec, UnsafeMutablePointer<Float>, Int) -> Void) {
    ensure(layout != .nchw)
    let blocks = channels / 16
    let xm = UnsafeMutablePointer(mutating: x)
    let am = UnsafeMutablePointer(mutating: a), bm = UnsafeMutablePointer(mutating: b)
    let planes = batch * blocks
    let slice = prefetch.map { ($0.count + planes - 1) / planes } ?? 0
    parallelFor(planes, work: batch * pixels * channels) { range in
        for plane in range {
            if let prefetch, let base = prefetch.baseAddress, plane * slice < prefetch.count {
                dd_prefetch(base + plane * slice, min(slice, prefetch.count - plane * slice))
            }
            let n = plane / blocks, blk = plane % blocks
            let (source, ps) = channelBlock(xm, layout, image: n, block: blk, pixels: pixels, channels: channels)
            body(plane, n, blk, am.vec(n * channels + blk * 16), bm.vec(n * channels + blk * 16), source, ps)
        }
    }
}

/// y = act(x * a[n, c] + b[n, c]) over blocked (or `inputLayout`) data; `y` may equal `x`. With
/// `nhwcOutput` the result is written as [batch, pixels, channels] instead (for the matrix
/// products of attention).
func affineActivation(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, pixels: Int, channels: Int,
                      a: UnsafePointer<Float>, b: UnsafePointer<Float>, silu: Bool, nhwcOutput: Bool = false,
                      inputLayout: ActivationLayout = .blocked16, prefetch: UnsafeRawBufferPointer? = nil) {
    forEachAffinePlane(x, batch: batch, pixels: pixels, channels: channels, layout: inputLayout, a: a, b: b,
                       prefetch: prefetch) { plane, n, blk, av, bv, src, ps in
        let (dst, stride) = channelBlock(y, nhwcOutput ? .nhwc : .blocked16, image: n, block: blk, pixels: pixels, channels: channels)
        for p in 0..<pixels {
            let u = bv.addingProduct(src.vec(p * ps), av)
            dst.setVec(p * stride, silu ? vsilu(u) : u)
        }
    }
}

/// `affineActivation` in bfloat16 (rounded to nearest even), into the blocked layout or with
/// `nhwcOutput` as [batch, pixels, channels]: the input of a bf16 convolution, written in the same
/// pass instead of converted after it. The rounding is AVX512-BF16's instruction where the CPU has
/// it, else `vbfloat16`: the same bits for every normal or zero value.
func affineActivationBFloat16(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt16>, batch: Int, pixels: Int, channels: Int,
                              a: UnsafePointer<Float>, b: UnsafePointer<Float>, silu: Bool, nhwcOutput: Bool = false,
                              inputLayout: ActivationLayout = .blocked16, prefetch: UnsafeRawBufferPointer? = nil) {
    let hardwareRounding = CPUFeatures.current.avx512BF16
    forEachAffinePlane(x, batch: batch, pixels: pixels, channels: channels, layout: inputLayout, a: a, b: b,
                       prefetch: prefetch) { plane, n, blk, av, bv, src, ps in
        let (dst, stride) = channelBlock(y, nhwcOutput ? .nhwc : .blocked16, image: n, block: blk, pixels: pixels, channels: channels)
        guard hardwareRounding else {
            for p in 0..<pixels {
                let u = bv.addingProduct(src.vec(p * ps), av)
                UnsafeMutableRawPointer(dst + p * stride).storeBytes(of: vbfloat16(silu ? vsilu(u) : u), as: SIMD16<UInt16>.self)
            }
            return
        }
        // float32 results of up to 64 pixels at a time (in L1), rounded and stored by vcvtneps2bf16.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 64 * 16) { buffer in
            let results = buffer.baseAddress!
            var p = 0
            while p < pixels {
                let count = min(64, pixels - p)
                for k in 0..<count {
                    let u = bv.addingProduct(src.vec((p + k) * ps), av)
                    results.setVec(k * 16, silu ? vsilu(u) : u)
                }
                dd_store_bfloat16(results, count, dst + p * stride, stride)
                p += count
            }
        }
    }
}

/// Backward of y = act(GN(x + addend) * g' + b') for one GroupNorm over blocked data: writes
/// (or adds, with `accumulate`) dL/dx given dL/dy. `a`, `b` are the forward coefficients,
/// `effectiveGamma` g', and `mean`/`rstd` the forward statistics; `scratch` holds
/// 5 x channels floats per thread.
func groupNormBackward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                       batch: Int, pixels: Int, channels: Int, groups: Int,
                       a: UnsafePointer<Float>, b: UnsafePointer<Float>, effectiveGamma: UnsafePointer<Float>,
                       mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                       addend: UnsafePointer<Float>? = nil, addendStride: Int = 0,
                       silu: Bool, accumulate: Bool, scratch: UnsafeMutablePointer<Float>) {
    let cpg = channels / groups, blocks = channels / 16
    let xm = UnsafeMutablePointer(mutating: x), dym = UnsafeMutablePointer(mutating: dy)
    let am = UnsafeMutablePointer(mutating: a), bm = UnsafeMutablePointer(mutating: b)
    let threads = min(ComputeRuntime.dnnlThreads, batch)
    parallelRegion(threads: batch * pixels * channels < 32_768 ? 1 : threads) { tid, nt in
        let s1 = scratch + tid * 5 * channels, s2 = s1 + channels
        let alpha = s2 + channels, betaC = alpha + channels, gammaC = betaC + channels
        for n in (batch * tid / nt)..<(batch * (tid + 1) / nt) {
            let co = n * channels
            for blk in 0..<blocks {
                let o = (n * blocks + blk) * pixels * 16, j = blk * 16
                let av = am.vec(co + j), bv = bm.vec(co + j)
                var acc1 = Vec(), acc2 = Vec()
                for p in 0..<pixels {
                    let xv = xm.vec(o + p * 16)
                    var du = dym.vec(o + p * 16)
                    if silu { du *= vsiluGrad(bv.addingProduct(xv, av)) }
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
                    let xb = (add - mu) * r
                    m1 += ge * Double(s1[c])
                    m2 += ge * (r * Double(s2[c]) + xb * Double(s1[c]))
                }
                let count = Double(pixels * cpg)
                m1 /= count; m2 /= count
                for c in (g * cpg)..<((g + 1) * cpg) {
                    let ge = Double(effectiveGamma[co + c])
                    let add = addend.map { Double($0[n * addendStride + c]) } ?? 0
                    let xb = (add - mu) * r
                    alpha[c] = Float(r * ge)
                    betaC[c] = Float(-r * r * m2)
                    gammaC[c] = Float(-r * (m1 + xb * m2))
                }
            }
            for blk in 0..<blocks {
                let o = (n * blocks + blk) * pixels * 16, j = blk * 16
                let av = am.vec(co + j), bv = bm.vec(co + j)
                let al = alpha.vec(j), be = betaC.vec(j), ga = gammaC.vec(j)
                for p in 0..<pixels {
                    let xv = xm.vec(o + p * 16)
                    var du = dym.vec(o + p * 16)
                    if silu { du *= vsiluGrad(bv.addingProduct(xv, av)) }
                    var g = du * al + xv * be + ga
                    if accumulate { g += dx.vec(o + p * 16) }
                    dx.setVec(o + p * 16, g)
                }
            }
        }
    }
}

/// [batch, pixels, channels] (NHWC) -> blocked, plus `addend` (blocked; it may be `y` itself).
func nhwcToBlocked(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, adding addend: UnsafePointer<Float>? = nil,
                   batch: Int, pixels: Int, channels: Int) {
    ensure(channels % 16 == 0)
    let blocks = channels / 16
    let xm = UnsafeMutablePointer(mutating: x), am = addend.map { UnsafeMutablePointer(mutating: $0) }
    parallelFor(batch * blocks, work: batch * pixels * channels) { range in
        for plane in range {
            let (src, ps) = channelBlock(xm, .nhwc, image: plane / blocks, block: plane % blocks, pixels: pixels, channels: channels)
            let dst = y + plane * pixels * 16
            if let a = am.map({ $0 + plane * pixels * 16 }) {
                for p in 0..<pixels { dst.setVec(p * 16, a.vec(p * 16) + src.vec(p * ps)) }
            } else {
                for p in 0..<pixels { dst.setVec(p * 16, src.vec(p * ps)) }
            }
        }
    }
}

/// Blocked -> [batch, pixels, channels] (NHWC).
func blockedToNhwc(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, pixels: Int, channels: Int) {
    let blocks = channels / 16
    let xm = UnsafeMutablePointer(mutating: x)
    parallelFor(batch * blocks, work: batch * pixels * channels) { range in
        for plane in range {
            let n = plane / blocks, blk = plane % blocks
            let src = xm + plane * pixels * 16, dst = y + n * pixels * channels + blk * 16
            for p in 0..<pixels { dst.setVec(p * channels, src.vec(p * 16)) }
        }
    }
}

/// Concatenates blocked tensors on channels: per sample, a's blocks then b's.
func concatBlocked(_ a: UnsafePointer<Float>, _ ca: Int, _ b: UnsafePointer<Float>, _ cb: Int, _ y: UnsafeMutablePointer<Float>, batch: Int, pixels: Int) {
    let c = ca + cb
    parallelFor(batch, work: batch * pixels * c) { range in
        for n in range {
            (y + n * pixels * c).update(from: a + n * pixels * ca, count: pixels * ca)
            (y + n * pixels * c + pixels * ca).update(from: b + n * pixels * cb, count: pixels * cb)
        }
    }
}
