@testable import DiffusionEngine
import Foundation
import Testing

/// Deterministic pseudo-random floats in [-1, 1).
func randomValues(_ count: Int, seed: UInt64) -> [Float] {
    var g = SplitMix64(seed: seed)
    return (0..<count).map { _ in g.nextUnit() * 2 - 1 }
}

@Suite struct KernelTests {
    @Test func polynomialExpIsAccurate() {
        var worst: Double = 0
        var x: Float = -80
        while x < 80 {
            let got = Double(sexp(x)), want = Foundation.exp(Double(x))
            worst = max(worst, abs(got - want) / want)
            x += 0.0137
        }
        #expect(worst < 5e-7)
        #expect(abs(ssilu(2) - 2 / (1 + Float(Foundation.exp(-2.0)))) < 1e-6)
    }

    @Test(arguments: [(3, 1, 1), (3, 2, 1), (1, 1, 0)])
    func convolutionMatchesNaiveLoop(kernel: Int, stride: Int, padding: Int) {
        let n = 2, ci = 16, co = 32, h = 9
        let x = randomValues(n * ci * h * h, seed: 1), w = randomValues(co * ci * kernel * kernel, seed: 2), b = randomValues(co, seed: 3)
        let ho = (h + 2 * padding - kernel) / stride + 1
        // Reference in NCHW, float64.
        var ref = [Double](repeating: 0, count: n * co * ho * ho)
        for s in 0..<n { for o in 0..<co { for i in 0..<ho { for j in 0..<ho {
            var acc = Double(b[o])
            for c in 0..<ci { for p in 0..<kernel { for q in 0..<kernel {
                let yi = i * stride + p - padding, xj = j * stride + q - padding
                if yi >= 0 && yi < h && xj >= 0 && xj < h {
                    acc += Double(x[((s * ci + c) * h + yi) * h + xj]) * Double(w[((o * ci + c) * kernel + p) * kernel + q])
                }
            } } }
            ref[((s * co + o) * ho + i) * ho + j] = acc
        } } } }
        let scratch = ScratchArena()
        let xT = Tensor(shape: [n, ci, h, h], values: x), xN = Tensor(shape: [n, h, h, ci])
        nchwToNhwc(xT.data, xN.data, batch: n, channels: ci, pixels: h * h)
        let wT = Tensor(shape: [co, ci, kernel, kernel], values: w), bT = Tensor(shape: [co], values: b)
        let conv = ConvolutionPrimitive(batch: n, inChannels: ci, outChannels: co, height: h, width: h, kernel: kernel,
                                        stride: stride, padding: padding, weights: wT.data, bias: bT.data,
                                        inputLayout: .nhwc, outputLayout: .nhwc, scratch: scratch)
        let yN = Tensor(shape: [n, ho, ho, co]), y = Tensor(shape: [n, co, ho, ho])
        conv(xN.data, yN.data)
        nhwcToNchw(yN.data, y.data, batch: n, channels: co, pixels: ho * ho)
        var err = 0.0
        for i in 0..<ref.count { err = max(err, abs(Double(y.data[i]) - ref[i])) }
        #expect(err < 1e-4)

        // Backward data is the transpose: <conv(x), g> == <x, conv^T(g)>.
        let back = ConvolutionPrimitive(batch: n, inChannels: ci, outChannels: co, height: h, width: h, kernel: kernel,
                                        stride: stride, padding: padding, weights: wT.data, bias: nil,
                                        inputLayout: .nhwc, outputLayout: .nhwc, backwardData: true, scratch: scratch)
        let noBias = ConvolutionPrimitive(batch: n, inChannels: ci, outChannels: co, height: h, width: h, kernel: kernel,
                                          stride: stride, padding: padding, weights: wT.data, bias: nil,
                                          inputLayout: .nhwc, outputLayout: .nhwc, scratch: scratch)
        let g = Tensor(shape: [n, ho, ho, co], values: randomValues(n * co * ho * ho, seed: 4))
        let dx = Tensor(shape: [n, h, h, ci])
        back(g.data, dx.data)
        noBias(xN.data, yN.data)
        var lhs = 0.0, rhs = 0.0
        for i in 0..<g.count { lhs += Double(yN.data[i]) * Double(g.data[i]) }
        for i in 0..<xN.count { rhs += Double(xN.data[i]) * Double(dx.data[i]) }
        #expect(abs(lhs - rhs) < 1e-3 * max(1, abs(lhs)))
    }

    /// Two plans' convolutions with one weight cache keep one reordered copy of the weights, and
    /// compute what a convolution with its own copy computes, bit for bit.
    @Test func convolutionsShareReorderedWeights() {
        let n = 2, ci = 16, co = 32, h = 12
        let w = Tensor(shape: [co, ci, 3, 3], values: randomValues(co * ci * 9, seed: 21))
        let b = Tensor(shape: [co], values: randomValues(co, seed: 22))
        let x = Tensor(shape: [n, ci, h, h], values: randomValues(n * ci * h * h, seed: 23))   // 16 channels: one block
        let cache = ConvolutionWeightCache()
        func conv(_ scratch: ScratchArena) -> ConvolutionPrimitive {
            ConvolutionPrimitive(batch: n, inChannels: ci, outChannels: co, height: h, width: h, kernel: 3, padding: 1,
                                 weights: w.data, bias: b.data, scratch: scratch)
        }
        let shared = [conv(ScratchArena(sharedWeights: cache)), conv(ScratchArena(sharedWeights: cache))], own = conv(ScratchArena())
        #expect(cache.count == 1)
        // The range the pass before a convolution prefetches is the one copy both plans read.
        #expect(shared[0].weightBytes.baseAddress == shared[1].weightBytes.baseAddress)
        #expect(shared[0].weightBytes.baseAddress != own.weightBytes.baseAddress)
        #expect(shared[0].weightBytes.count == own.weightBytes.count && own.weightBytes.count >= co * ci * 9 * 4)
        let outputs = (shared + [own]).map { c -> [Float] in
            let y = Tensor(shape: [n, co, h, h]); c(x.data, y.data); return Array(UnsafeBufferPointer(start: y.data, count: y.count))
        }
        #expect(outputs[0] == outputs[2] && outputs[1] == outputs[2])
        #expect(outputs[2].contains { $0 != 0 })
    }

    /// The output layer's kernel against a float64 loop, into channels of a wider NCHW tensor
    /// (the other channels untouched): 3 input blocks (an odd one left over), and the UNet's 32 -> 2.
    @Test(arguments: [(48, 3, 7, 9), (32, 2, 28, 28)])
    func fewChannelConvolutionMatchesNaiveLoop(ci: Int, co: Int, h: Int, w: Int) {
        let n = 2, total = co + 2, offset = 1
        let x = randomValues(n * ci * h * w, seed: 11), wt = randomValues(co * ci * 9, seed: 12), b = randomValues(co, seed: 13)
        let xT = Tensor(shape: [n, ci, h, w], values: x), xN = Tensor(shape: [n, h, w, ci]), xB = Tensor(shape: [n, ci, h, w])
        nchwToNhwc(xT.data, xN.data, batch: n, channels: ci, pixels: h * w)
        nhwcToBlocked(xN.data, xB.data, batch: n, pixels: h * w, channels: ci)
        let wT = Tensor(shape: [co, ci, 3, 3], values: wt), bT = Tensor(shape: [co], values: b)
        let conv = FewChannelConvolution(inChannels: ci, outChannels: co, height: h, width: w, weights: wT.data, bias: bT.data)
        let y = Tensor(shape: [n, total, h, w]); y.fill(7)
        conv(xB.data, batch: n, into: y.data, channelOffset: offset, totalChannels: total)
        var err = 0.0, untouched = true
        for s in 0..<n { for c in 0..<total { for i in 0..<h { for j in 0..<w {
            let got = Double(y.data[((s * total + c) * h + i) * w + j])
            guard c >= offset && c < offset + co else { untouched = untouched && got == 7; continue }
            let o = c - offset
            var acc = Double(b[o])
            for k in 0..<ci { for p in 0..<3 { for q in 0..<3 {
                let yi = i + p - 1, xj = j + q - 1
                if yi >= 0 && yi < h && xj >= 0 && xj < w { acc += Double(x[((s * ci + k) * h + yi) * w + xj]) * Double(wt[((o * ci + k) * 3 + p) * 3 + q]) }
            } } }
            err = max(err, abs(got - acc))
        } } } }
        #expect(untouched)
        #expect(err < 1e-4)
    }

    @Test func groupNormSiLUMatchesFloat64() {
        let n = 3, pixels = 25, c = 64, groups = 32, cpg = 2
        let x = randomValues(n * pixels * c, seed: 5).map { $0 * 3 + 0.5 }
        let gamma = randomValues(c, seed: 6), beta = randomValues(c, seed: 7)
        let scale = randomValues(n * c, seed: 8), shift = randomValues(n * c, seed: 9)
        let xN = Tensor(shape: [n, pixels, c], values: x), xT = Tensor(shape: [n, pixels, c])
        nhwcToBlocked(xN.data, xT.data, batch: n, pixels: pixels, channels: c)
        let gT = Tensor(shape: [c], values: gamma), bT = Tensor(shape: [c], values: beta)
        let sT = Tensor(shape: [n, c], values: scale), hT = Tensor(shape: [n, c], values: shift)
        let mean = Tensor(shape: [n * groups]), rstd = Tensor(shape: [n * groups])
        let a = Tensor(shape: [n * c]), b = Tensor(shape: [n * c]), ge = Tensor(shape: [n * c]), y = Tensor(shape: [n, pixels, c])
        groupNormStatistics(xT.data, batch: n, pixels: pixels, channels: c, groups: groups, mean: mean.data, rstd: rstd.data)
        groupNormCoefficients(batch: n, channels: c, groups: groups, mean: mean.data, rstd: rstd.data, gamma: gT.data, beta: bT.data,
                              scale: sT.data, shift: hT.data, scaleStride: c, a: a.data, b: b.data, effectiveGamma: ge.data)
        affineActivation(xT.data, y.data, batch: n, pixels: pixels, channels: c, a: a.data, b: b.data, silu: true, nhwcOutput: true)
        var err = 0.0
        for s in 0..<n {
            for g in 0..<groups {
                var m = 0.0, v = 0.0
                for p in 0..<pixels { for k in 0..<cpg { m += Double(x[(s * pixels + p) * c + g * cpg + k]) } }
                m /= Double(pixels * cpg)
                for p in 0..<pixels { for k in 0..<cpg { let d = Double(x[(s * pixels + p) * c + g * cpg + k]) - m; v += d * d } }
                v /= Double(pixels * cpg)
                for p in 0..<pixels { for k in 0..<cpg {
                    let ch = g * cpg + k, i = (s * pixels + p) * c + ch
                    let norm = (Double(x[i]) - m) / (v + 1e-5).squareRoot() * Double(gamma[ch]) + Double(beta[ch])
                    let u = norm * (1 + Double(scale[s * c + ch])) + Double(shift[s * c + ch])
                    err = max(err, abs(u / (1 + Foundation.exp(-u)) - Double(y.data[i])))
                } }
            }
        }
        #expect(err < 1e-5)
    }

    @Test func softmaxRowsSumToOne() {
        let t = Tensor(shape: [3, 37], values: randomValues(111, seed: 10).map { $0 * 20 })
        let ref = t.array
        softmaxRows(t.data, rows: 3, cols: 37)
        for r in 0..<3 {
            let m = ref[(r * 37)..<((r + 1) * 37)].max()!
            let denom = ref[(r * 37)..<((r + 1) * 37)].reduce(0.0) { $0 + Foundation.exp(Double($1 - m)) }
            for j in 0..<37 {
                #expect(abs(Double(t.data[r * 37 + j]) - Foundation.exp(Double(ref[r * 37 + j] - m)) / denom) < 1e-6)
            }
        }
    }

    @Test func resamplingAndConcatenation() {
        let x = Tensor(shape: [1, 2, 2, 16], values: (0..<64).map(Float.init))
        let up = Tensor(shape: [1, 4, 4, 16])
        upsampleNearest2x(x.data, up.data, batch: 1, height: 2, width: 2, channels: 16)
        #expect(up.data[(3 * 4 + 2) * 16 + 5] == x.data[(1 * 2 + 1) * 16 + 5])
        // Every output pixel is its source pixel, for vector-wide (16, 32) and odd (3) channel counts.
        for c in [16, 32, 3] {
            let (n, h, w) = (2, 3, 5)
            let source = Tensor(shape: [n * h * w * c], values: randomValues(n * h * w * c, seed: UInt64(70 + c)))
            let doubled = Tensor(shape: [n * 4 * h * w * c])
            upsampleNearest2x(source.data, doubled.data, batch: n, height: h, width: w, channels: c)
            var wrong = 0
            for b in 0..<n { for i in 0..<(2 * h) { for j in 0..<(2 * w) { for k in 0..<c
                where doubled.data[((b * 2 * h + i) * 2 * w + j) * c + k] != source.data[((b * h + i / 2) * w + j / 2) * c + k] { wrong += 1 } } } }
            #expect(wrong == 0, "\(wrong) values misplaced with \(c) channels")
        }
        let down = Tensor(shape: [1, 2, 2, 16])
        avgPool2x2(up.data, down.data, batch: 1, height: 4, width: 4, channels: 16)
        #expect(down.array == x.array)
        let cat = Tensor(shape: [4, 48])
        let y = Tensor(shape: [4, 32], values: (0..<128).map { Float(-$0) })
        concatChannels(x.data, 16, y.data, 32, cat.data, rows: 4)
        #expect(cat.data[2 * 48 + 3] == x.data[2 * 16 + 3] && cat.data[2 * 48 + 16 + 7] == y.data[2 * 32 + 7])
    }
}
