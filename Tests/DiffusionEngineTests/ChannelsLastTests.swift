@testable import DiffusionEngine
import Testing

/// The channels-last float32 intermediates of bf16 ResBlocks (what AMX convolutions read and
/// write): the GroupNorm passes read them bit for bit as they read blocks, the layout kernel
/// follows its index map, convolutions write nhwc on request, and a ResBlock computes the same
/// output either way.
@Suite struct ChannelsLastTests {
    /// nChw16c -> nhwc by the index maps (value (image, channel, pixel)).
    static func channelsLast(_ blocked: [Float], batch n: Int, channels c: Int, pixels: Int) -> [Float] {
        var out = [Float](repeating: 0, count: blocked.count)
        for s in 0..<n { for ch in 0..<c { for q in 0..<pixels {
            out[(s * pixels + q) * c + ch] = blocked[((s * c / 16 + ch / 16) * pixels + q) * 16 + ch % 16]
        } } }
        return out
    }

    /// Statistics and the affine + SiLU pass (float32 and bfloat16) over nhwc input give the same
    /// bits as over the blocked input: the same channels of each pixel, summed in the same order.
    @Test(arguments: [7 * 7, 14 * 14, 28 * 28])
    func groupNormReadsChannelsLastBitForBit(pixels: Int) {
        let n = 2, c = 64, groups = 32
        let values = randomValues(n * c * pixels, seed: 41).map { $0 * 3 + 0.5 }
        let blocked = Tensor(shape: [values.count], values: values)
        let nhwc = Tensor(shape: [values.count], values: Self.channelsLast(values, batch: n, channels: c, pixels: pixels))
        let addend = Tensor(shape: [n * c], values: randomValues(n * c, seed: 42))
        func statistics(_ x: Tensor, _ layout: ActivationLayout) -> [Float] {
            let mean = Tensor(shape: [n * groups]), rstd = Tensor(shape: [n * groups])
            groupNormStatistics(x.data, batch: n, pixels: pixels, channels: c, groups: groups, addend: addend.data, addendStride: c,
                                mean: mean.data, rstd: rstd.data, layout: layout)
            return mean.array + rstd.array
        }
        #expect(statistics(nhwc, .nhwc) == statistics(blocked, .blocked16))

        let a = Tensor(shape: [n * c], values: randomValues(n * c, seed: 43)), b = Tensor(shape: [n * c], values: randomValues(n * c, seed: 44))
        let fromBlocked = Tensor(shape: [values.count]), fromNHWC = Tensor(shape: [values.count])
        affineActivation(blocked.data, fromBlocked.data, batch: n, pixels: pixels, channels: c, a: a.data, b: b.data, silu: true)
        affineActivation(nhwc.data, fromNHWC.data, batch: n, pixels: pixels, channels: c, a: a.data, b: b.data, silu: true, inputLayout: .nhwc)
        #expect(fromNHWC.array == fromBlocked.array)

        let half = UnsafeMutablePointer<UInt16>.allocate(capacity: 2 * values.count)
        defer { half.deallocate() }
        affineActivationBFloat16(blocked.data, half, batch: n, pixels: pixels, channels: c, a: a.data, b: b.data, silu: true, nhwcOutput: true)
        affineActivationBFloat16(nhwc.data, half + values.count, batch: n, pixels: pixels, channels: c, a: a.data, b: b.data, silu: true,
                                 nhwcOutput: true, inputLayout: .nhwc)
        let differing = (0..<values.count).filter { half[$0] != half[values.count + $0] }
        #expect(differing.isEmpty, "\(differing.count) bfloat16 values differ")
    }

    /// nhwc -> nChw16c, alone, adding a blocked tensor, and adding onto the destination in place.
    @Test func nhwcToBlockedFollowsTheIndexMap() {
        let n = 3, c = 48, pixels = 25
        let blockedValues = randomValues(n * c * pixels, seed: 45)
        let source = Tensor(shape: [blockedValues.count], values: Self.channelsLast(blockedValues, batch: n, channels: c, pixels: pixels))
        let addendValues = randomValues(n * c * pixels, seed: 46)
        let addend = Tensor(shape: [addendValues.count], values: addendValues)
        let plain = Tensor(shape: [blockedValues.count]), added = Tensor(shape: [blockedValues.count])
        nhwcToBlocked(source.data, plain.data, batch: n, pixels: pixels, channels: c)
        nhwcToBlocked(source.data, added.data, adding: addend.data, batch: n, pixels: pixels, channels: c)
        #expect(plain.array == blockedValues)
        #expect(added.array == zip(addendValues, blockedValues).map { $0 + $1 })
        nhwcToBlocked(source.data, addend.data, adding: addend.data, batch: n, pixels: pixels, channels: c)
        #expect(addend.array == added.array)
    }

    /// A bf16 convolution asked for nhwc output writes the values it writes in blocks, at their nhwc
    /// places (AMX: its own layout; AVX512-BF16: its blocked result reordered), and adds onto what
    /// the nhwc output holds with `accumulate`.
    @Test(.enabled(if: cpuHasBFloat16, "the CPU has neither AVX512-BF16 nor AMX-BF16"), arguments: [(3, false), (1, false), (3, true)])
    func convolutionWritesChannelsLastOnRequest(kernel: Int, accumulate: Bool) {
        let n = 8, ci = 64, co = 32, h = 14, pixels = h * h
        let w = Tensor(shape: [co, ci, kernel, kernel], values: randomValues(co * ci * kernel * kernel, seed: 47))
        let bias = Tensor(shape: [co], values: randomValues(co, seed: 48))
        let input = Tensor(shape: [n * ci * pixels], values: randomValues(n * ci * pixels, seed: 49).map { $0 * 2 })
        let heldBlocked = randomValues(n * co * pixels, seed: 50)
        func conv(_ layout: ActivationLayout) -> ConvolutionPrimitive {
            ConvolutionPrimitive(batch: n, inChannels: ci, outChannels: co, height: h, width: h, kernel: kernel, padding: kernel / 2,
                                 weights: w.data, bias: bias.data, outputLayout: layout, accumulate: accumulate,
                                 precision: .bf16, scratch: ScratchArena())
        }
        let blocked = Tensor(shape: [heldBlocked.count], values: accumulate ? heldBlocked : Array(repeating: 0, count: heldBlocked.count))
        let nhwc = Tensor(shape: [heldBlocked.count], values: Self.channelsLast(blocked.array, batch: n, channels: co, pixels: pixels))
        conv(.blocked16)(input.data, blocked.data)
        conv(.nhwc)(input.data, nhwc.data)
        let expected = Self.channelsLast(blocked.array, batch: n, channels: co, pixels: pixels)
        let scale = expected.map(abs).max()!
        let worst = zip(nhwc.array, expected).map { abs($0 - $1) }.max()!
        // Without accumulate the same kernel wrote the same sums; with it only where the addition happens differs.
        #expect(worst <= (accumulate ? 1e-6 * scale : 0), "largest difference \(worst) of \(scale)")
    }

    /// Every ResBlock of two fixture UNets (plain, with a skip convolution, up and down, scale-shift
    /// and additive conditioning) gives the same bf16 output with channels-last intermediates as
    /// with blocked ones, up to where additions happen.
    @Test(.enabled(if: cpuHasBFloat16, "the CPU has neither AVX512-BF16 nor AMX-BF16"), arguments: ["tiny-unet-cond", "tiny-unet-uncond"])
    func resBlockIsTheSameWithChannelsLastIntermediates(bundle: String) throws {
        let net = try FixtureCase(bundle).bundle.makeUNet()
        let trunk = net.trunk, batch = 8
        let emb = Tensor(shape: [batch * trunk.embTotal], values: randomValues(batch * trunk.embTotal, seed: 51))
        var checked = 0, resampling = 0, skipping = 0
        for block in trunk.inputBlocks + [trunk.middle] + trunk.outputBlocks {
            var size = block.size
            for layer in block.layers {
                guard case .res(let p) = layer else {
                    if case .upsample = layer { size *= 2 } else if case .downsample = layer { size /= 2 }
                    continue
                }
                let outSize = p.up ? 2 * size : p.down ? size / 2 : size
                let input = Tensor(shape: [batch * p.inChannels * size * size],
                                   values: randomValues(batch * p.inChannels * size * size, seed: UInt64(52 + checked)).map { $0 * 2 })
                var outputs: [[Float]] = []
                for channelsLast in [false, true] {
                    let ws = Workspace(keepIntermediates: false)
                    let runner = ResBlockRunner(p, batch: batch, size: size, ws: ws, scratch: ScratchArena(), training: false,
                                                precision: .bf16, channelsLast: channelsLast)
                    #expect(runner.channelsLast == channelsLast)
                    ws.allocate()
                    let out = Tensor(shape: [batch * p.outChannels * outSize * outSize])
                    runner.forward(input.data, out.data, EmbeddingContext(values: emb.data, stride: trunk.embTotal))
                    outputs.append(out.array)
                }
                let scale = outputs[0].map(abs).max()!
                let worst = zip(outputs[0], outputs[1]).map { abs($0 - $1) }.max()!
                #expect(scale > 0.1 && worst <= 1e-5 * scale, "ResBlock \(p.inChannels)->\(p.outChannels) at \(size): \(worst) of \(scale)")
                checked += 1
                if p.up || p.down { resampling += 1 }
                if p.skip != nil { skipping += 1 }
                size = outSize
            }
        }
        #expect(checked >= 4)
        if bundle == "tiny-unet-cond" { #expect(resampling >= 2 && skipping >= 1) }
    }
}
