/// Elementwise, resampling, pooling and layout kernels over NHWC activations
/// ([batch, height, width, channels]), vectorised 16 floats at a time with scalar tails.

/// y = silu(x) for `count` floats; `y` may equal `x`.
func siluKernel(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    let xm = UnsafeMutablePointer(mutating: x)
    parallelFor((count + 1023) / 1024, work: count) { range in
        let lo = range.lowerBound * 1024, hi = min(range.upperBound * 1024, count)
        var i = lo
        while i + 16 <= hi { y.setVec(i, vsilu(xm.vec(i))); i += 16 }
        while i < hi { y[i] = ssilu(xm[i]); i += 1 }
    }
}

/// y = max(x, 0) for `count` floats; `y` may equal `x`.
func reluKernel(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    let xm = UnsafeMutablePointer(mutating: x)
    parallelFor((count + 1023) / 1024, work: count) { range in
        let lo = range.lowerBound * 1024, hi = min(range.upperBound * 1024, count)
        var i = lo
        while i + 16 <= hi { y.setVec(i, pointwiseMax(xm.vec(i), Vec())); i += 16 }
        while i < hi { y[i] = max(xm[i], 0); i += 1 }
    }
}

/// y += x for `count` floats.
func addKernel(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
    let xm = UnsafeMutablePointer(mutating: x)
    parallelFor((count + 1023) / 1024, work: count) { range in
        let lo = range.lowerBound * 1024, hi = min(range.upperBound * 1024, count)
        var i = lo
        while i + 16 <= hi { y.setVec(i, y.vec(i) + xm.vec(i)); i += 16 }
        while i < hi { y[i] += xm[i]; i += 1 }
    }
}

/// Copies `count` floats (parallel for large copies).
func copyKernel(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
    parallelFor((count + 4095) / 4096, work: count, grain: 262_144) { range in
        let lo = range.lowerBound * 4096, hi = min(range.upperBound * 4096, count)
        (y + lo).update(from: x + lo, count: hi - lo)
    }
}

/// Adds a per-channel bias to every row of a [rows, channels] matrix.
func addBiasKernel(_ y: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, channels: Int) {
    let bm = UnsafeMutablePointer(mutating: bias)
    parallelFor(rows, work: rows * channels) { range in
        for r in range {
            let row = y + r * channels
            var j = 0
            while j + 16 <= channels { row.setVec(j, row.vec(j) + bm.vec(j)); j += 16 }
            while j < channels { row[j] += bm[j]; j += 1 }
        }
    }
}

/// Nearest-neighbour 2x upsampling: [N, H, W, C] -> [N, 2H, 2W, C].
func upsampleNearest2x(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, height: Int, width: Int, channels: Int) {
    let c = channels, w2 = 2 * width
    parallelFor(batch * height, work: batch * height * width * c * 4) { range in
        for r in range {   // r = n * height + i
            let src = x + r * width * c
            let d0 = y + (2 * r) * w2 * c, d1 = d0 + w2 * c
            if c % 16 == 0 {
                // 16 floats at a time in registers (a library copy call per pixel costs more than the copy).
                let s = UnsafeMutablePointer(mutating: src)
                for j in 0..<width {
                    var k = 0
                    while k < c {
                        let v = s.vec(j * c + k)
                        d0.setVec(2 * j * c + k, v); d0.setVec((2 * j + 1) * c + k, v)
                        d1.setVec(2 * j * c + k, v); d1.setVec((2 * j + 1) * c + k, v)
                        k += 16
                    }
                }
                continue
            }
            for j in 0..<width {
                (d0 + 2 * j * c).update(from: src + j * c, count: c)
                (d0 + (2 * j + 1) * c).update(from: src + j * c, count: c)
            }
            d1.update(from: d0, count: w2 * c)
        }
    }
}

/// Backward of nearest 2x upsampling: dx[i, j] = sum of the four dy it was copied to.
func upsampleNearest2xBackward(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, batch: Int, height: Int, width: Int, channels: Int) {
    let c = channels, w2 = 2 * width
    let dym = UnsafeMutablePointer(mutating: dy)
    for r in 0..<(batch * height) {
        let s0 = dym + (2 * r) * w2 * c, s1 = s0 + w2 * c
        for j in 0..<width {
            for k in 0..<c {
                dx[(r * width + j) * c + k] = s0[2 * j * c + k] + s0[(2 * j + 1) * c + k] + s1[2 * j * c + k] + s1[(2 * j + 1) * c + k]
            }
        }
    }
}

/// 2x2 average pooling, stride 2: [N, H, W, C] -> [N, H/2, W/2, C] (H, W even).
func avgPool2x2(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, height: Int, width: Int, channels: Int) {
    let c = channels, ho = height / 2, wo = width / 2
    let xm = UnsafeMutablePointer(mutating: x)
    parallelFor(batch * ho, work: batch * height * width * c) { range in
        for r in range {
            let n = r / ho, i = r % ho
            let s0 = xm + ((n * height + 2 * i) * width) * c, s1 = s0 + width * c
            let d = y + r * wo * c
            for j in 0..<wo {
                var k = 0
                while k + 16 <= c {
                    let v = (s0.vec(2 * j * c + k) + s0.vec((2 * j + 1) * c + k)) + (s1.vec(2 * j * c + k) + s1.vec((2 * j + 1) * c + k))
                    d.setVec(j * c + k, v * 0.25)
                    k += 16
                }
                while k < c {
                    d[j * c + k] = ((s0[2 * j * c + k] + s0[(2 * j + 1) * c + k]) + (s1[2 * j * c + k] + s1[(2 * j + 1) * c + k])) * 0.25
                    k += 1
                }
            }
        }
    }
}

/// Backward of 2x2 average pooling: each input pixel receives a quarter of its window's gradient.
func avgPool2x2Backward(_ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, batch: Int, height: Int, width: Int, channels: Int, accumulate: Bool) {
    let c = channels, ho = height / 2, wo = width / 2
    for n in 0..<batch {
        for i in 0..<height {
            for j in 0..<width {
                let s = dy + ((n * ho + i / 2) * wo + j / 2) * c
                let d = dx + ((n * height + i) * width + j) * c
                for k in 0..<c { d[k] = (accumulate ? d[k] : 0) + s[k] * 0.25 }
            }
        }
    }
}

/// k x k max pooling with stride k (floor): [N, H, W, C] -> [N, H/k, W/k, C].
func maxPool(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, height: Int, width: Int, channels: Int, size k: Int) {
    let c = channels, ho = height / k, wo = width / k
    parallelFor(batch * ho, work: batch * height * width * c) { range in
        for r in range {
            let n = r / ho, i = r % ho
            for j in 0..<wo {
                let d = y + (r * wo + j) * c
                for ch in 0..<c {
                    var m = -Float.infinity
                    for a in 0..<k {
                        let row = x + ((n * height + i * k + a) * width + j * k) * c
                        for b in 0..<k { m = max(m, row[b * c + ch]) }
                    }
                    d[ch] = m
                }
            }
        }
    }
}

/// Mean over pixels: [N, P, C] -> [N, C].
func meanOverPixels(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, pixels: Int, channels: Int) {
    for n in 0..<batch {
        let d = y + n * channels
        d.update(repeating: 0, count: channels)
        for p in 0..<pixels {
            let s = x + (n * pixels + p) * channels
            for c in 0..<channels { d[c] += s[c] }
        }
        let inv = 1 / Float(pixels)
        for c in 0..<channels { d[c] *= inv }
    }
}

/// Concatenates on channels: [rows, ca] and [rows, cb] -> [rows, ca + cb].
func concatChannels(_ a: UnsafePointer<Float>, _ ca: Int, _ b: UnsafePointer<Float>, _ cb: Int, _ y: UnsafeMutablePointer<Float>, rows: Int) {
    let c = ca + cb
    parallelFor(rows, work: rows * c) { range in
        for r in range {
            (y + r * c).update(from: a + r * ca, count: ca)
            (y + r * c + ca).update(from: b + r * cb, count: cb)
        }
    }
}

/// Layout change [N, C, P] (NCHW) -> [N, P, C] (NHWC).
func nchwToNhwc(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, pixels: Int) {
    for n in 0..<batch {
        let s = x + n * channels * pixels, d = y + n * channels * pixels
        if channels == 1 || pixels == 1 { d.update(from: s, count: channels * pixels); continue }
        for c in 0..<channels { for p in 0..<pixels { d[p * channels + c] = s[c * pixels + p] } }
    }
}

/// Layout change [N, P, C] (NHWC) -> [N, C, P] (NCHW).
func nhwcToNchw(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, channels: Int, pixels: Int) {
    for n in 0..<batch {
        let s = x + n * channels * pixels, d = y + n * channels * pixels
        if channels == 1 || pixels == 1 { d.update(from: s, count: channels * pixels); continue }
        for p in 0..<pixels { for c in 0..<channels { d[c * pixels + p] = s[p * channels + c] } }
    }
}

/// Row-wise softmax of a [rows, cols] matrix in place (max-subtracted, float32).
func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows {
        let row = x + r * cols
        var mv = Vec(repeating: -.infinity)
        var j = 0
        while j + 16 <= cols { mv = lanewiseMax(mv, row.vec(j)); j += 16 }
        var m = hmax(mv)
        while j < cols { m = max(m, row[j]); j += 1 }
        var sv = Vec()
        j = 0
        while j + 16 <= cols { let e = vexp(row.vec(j) - m); row.setVec(j, e); sv += e; j += 16 }
        var s = hsum(sv)
        while j < cols { let e = sexp(row[j] - m); row[j] = e; s += e; j += 1 }
        let inv = 1 / s
        j = 0
        while j + 16 <= cols { row.setVec(j, row.vec(j) * inv); j += 16 }
        while j < cols { row[j] *= inv; j += 1 }
    }
}
