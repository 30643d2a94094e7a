/// A 3x3 convolution (stride 1, padding 1) from 16-channel-blocked activations to a few output
/// channels written straight into NCHW planes: the UNet's output layer (32 -> 2 channels). oneDNN
/// computes such a layer over a whole zero-padded 16-channel output block with its direct kernel;
/// here each output value is one dot product over input channels (16 lanes) and taps.
final class FewChannelConvolution {
    let inChannels: Int, outChannels: Int, height: Int, width: Int
    /// Weights as [out][in block][tap][16 input channels].
    private let weights: UnsafeMutablePointer<Float>
    private let bias: [Float]

    /// Whether this kernel serves a convolution of that shape (otherwise use oneDNN).
    static func serves(inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int) -> Bool {
        kernel == 3 && stride == 1 && padding == 1 && inChannels % 16 == 0 && outChannels <= 4
    }

    /// `weights` are OIHW float32 (PyTorch order), `bias` has outChannels entries.
    init(inChannels: Int, outChannels: Int, height: Int, width: Int, weights w: UnsafePointer<Float>, bias b: UnsafePointer<Float>?) {
        ensure(Self.serves(inChannels: inChannels, outChannels: outChannels, kernel: 3, stride: 1, padding: 1),
               "FewChannelConvolution: \(inChannels) -> \(outChannels) channels")
        self.inChannels = inChannels; self.outChannels = outChannels; self.height = height; self.width = width
        let blocks = inChannels / 16
        weights = .allocate(capacity: outChannels * blocks * 9 * 16)
        for o in 0..<outChannels {
            for i in 0..<inChannels {
                for tap in 0..<9 {
                    weights[((o * blocks + i / 16) * 9 + tap) * 16 + i % 16] = w[(o * inChannels + i) * 9 + tap]
                }
            }
        }
        bias = (0..<outChannels).map { b?[$0] ?? 0 }
    }

    deinit { weights.deallocate() }

    /// Multiply-add FLOPs x 2 of one image.
    var flopsPerImage: Double { 2.0 * Double(outChannels * inChannels * 9 * height * width) }

    /// Convolves `batch` blocked images into channels [channelOffset, channelOffset + outChannels)
    /// of an NCHW output with `totalChannels` channels.
    func callAsFunction(_ input: UnsafePointer<Float>, batch: Int, into output: UnsafeMutablePointer<Float>,
                        channelOffset: Int = 0, totalChannels: Int? = nil) {
        let total = totalChannels ?? outChannels
        let pixels = height * width, blocks = inChannels / 16
        let x = UnsafeMutablePointer(mutating: input)
        parallelFor(batch * outChannels, work: batch * pixels * inChannels * outChannels * 9) { range in
            // Per pixel, 16 partial sums (one per input channel of a block), summed up at the end.
            withUnsafeTemporaryAllocation(of: Vec.self, capacity: pixels) { partial in
                let sums = UnsafeMutableRawPointer(partial.baseAddress!).assumingMemoryBound(to: Float.self)
                for plane in range {
                    let n = plane / outChannels, o = plane % outChannels
                    for blk in 0..<blocks {
                        accumulate(x + (n * blocks + blk) * pixels * 16, weights + (o * blocks + blk) * 9 * 16, into: sums, first: blk == 0)
                    }
                    finish(sums, into: output + (n * total + channelOffset + o) * pixels, bias: bias[o])
                }
            }
        }
    }

    /// row[pixel] = the sum of sums[pixel]'s 16 lanes + bias (not inlined, as `accumulate`).
    @inline(never)
    private func finish(_ sums: UnsafeMutablePointer<Float>, into row: UnsafeMutablePointer<Float>, bias: Float) {
        for q in 0 ..< height * width {
            // Two vector folds, then four scalar adds (`hsum`'s last steps made LLVM gather across pixels).
            let v = sums.vec(q &* 16), a = v.lowHalf + v.highHalf, b = a.lowHalf + a.highHalf
            row[q] = b.sum() + bias
        }
    }

    /// sums[pixel] (+)= the 9 taps of one 16-channel input plane times their weight vectors.
    /// Not inlined: inlined into the parallel closure, LLVM splits its vector arithmetic into pieces.
    @inline(never)
    private func accumulate(_ plane: UnsafeMutablePointer<Float>, _ w: UnsafeMutablePointer<Float>,
                            into sums: UnsafeMutablePointer<Float>, first: Bool) {
        let h = height, width = self.width
        if first { sums.update(repeating: 0, count: h * width * 16) }
        let w0 = w.vec(0), w1 = w.vec(16), w2 = w.vec(32), w3 = w.vec(48), w4 = w.vec(64)
        let w5 = w.vec(80), w6 = w.vec(96), w7 = w.vec(112), w8 = w.vec(128)
        let up = -width &* 16, down = width &* 16
        // Interior pixels: all nine taps, as two chains of adds. (Multiplies and adds, not
        // `addingProduct`, which LLVM vectorizes less reliably.)
        for y in 1 ..< max(h - 1, 1) {
            for xo in 1 ..< max(width - 1, 1) {
                let at = (y &* width &+ xo) &* 16
                var acc = sums.vec(at)
                var other = plane.vec(at &+ up &- 16) * w0
                acc += plane.vec(at &+ up) * w1
                other += plane.vec(at &+ up &+ 16) * w2
                acc += plane.vec(at &- 16) * w3
                other += plane.vec(at) * w4
                acc += plane.vec(at &+ 16) * w5
                other += plane.vec(at &+ down &- 16) * w6
                acc += plane.vec(at &+ down) * w7
                other += plane.vec(at &+ down &+ 16) * w8
                sums.setVec(at, acc + other)
            }
        }
        // Border pixels: the taps inside the image.
        for y in 0..<h {
            let edgeRow = y == 0 || y == h - 1
            for xo in 0..<width where edgeRow || xo == 0 || xo == width - 1 {
                let at = (y &* width &+ xo) &* 16
                var acc = sums.vec(at)
                for dy in -1...1 where y &+ dy >= 0 && y &+ dy < h {
                    for dx in -1...1 where xo &+ dx >= 0 && xo &+ dx < width {
                        acc += plane.vec(at &+ (dy &* width &+ dx) &* 16) * w.vec(((dy &+ 1) &* 3 &+ dx &+ 1) &* 16)
                    }
                }
                sums.setVec(at, acc)
            }
        }
    }
}
