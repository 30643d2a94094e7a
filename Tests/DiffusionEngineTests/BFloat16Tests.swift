import CDNNL
@testable import DiffusionEngine
import Foundation
import ModelBundles
import Testing

/// float32 rounded to the nearest bfloat16 (ties to even), as a float32: the closed form of the
/// rounding the bf16 convolutions apply to their inputs and weights.
func roundedToBFloat16(_ x: Float) -> Float {
    let bits = x.bitPattern
    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
    return Float(bitPattern: rounded & 0xFFFF_0000)
}

/// Whether this CPU has bfloat16 instructions (the bf16 precision refuses to run without them).
let cpuHasBFloat16 = ComputePrecision.bf16.unsupportedReason(on: .current) == nil

@Suite struct BFloat16Tests {
    @Test func roundingReferenceIsNearestEven() {
        let ulp: Float = 1.0 / 128     // bfloat16 keeps 7 bits after the point
        #expect(roundedToBFloat16(1) == 1)
        #expect(roundedToBFloat16(1 + ulp / 2) == 1)                   // a tie: to the even neighbour, 1
        #expect(roundedToBFloat16(1 + 3 * ulp / 2) == 1 + 2 * ulp)     // a tie: to the even neighbour, 1 + 2 ulp
        #expect(roundedToBFloat16(1 + 0.51 * ulp) == 1 + ulp)
        #expect(roundedToBFloat16(-3.1415927) == -3.140625)
    }

    /// A bf16 convolution equals the float64 convolution of its bfloat16-rounded input and weights
    /// (float32 accumulation aside; added onto what the output held with `accumulate`), and visibly
    /// differs from the unrounded one. On an AMX CPU it runs channels-last and reorders its result.
    @Test(.enabled(if: cpuHasBFloat16, "the CPU has neither AVX512-BF16 nor AMX-BF16"),
          arguments: [(3, false), (1, false), (3, true)])
    func convolutionRoundsItsOperandsToBFloat16(kernel: Int, accumulate: Bool) {
        let n = 2, ci = 32, co = 32, h = 7, padding = kernel / 2
        let x = randomValues(n * ci * h * h, seed: 11).map { $0 * 3 }, w = randomValues(co * ci * kernel * kernel, seed: 12)
        let b = randomValues(co, seed: 13)
        func reference(_ x: [Float], _ w: [Float]) -> [Double] {
            var out = [Double](repeating: 0, count: n * co * h * h)
            for s in 0..<n { for o in 0..<co { for i in 0..<h { for j in 0..<h {
                var acc = Double(b[o])
                for c in 0..<ci { for p in 0..<kernel { for q in 0..<kernel {
                    let yi = i + p - padding, xj = j + q - padding
                    if yi >= 0 && yi < h && xj >= 0 && xj < h {
                        acc += Double(x[((s * ci + c) * h + yi) * h + xj]) * Double(w[((o * ci + c) * kernel + p) * kernel + q])
                    }
                } } }
                out[((s * co + o) * h + i) * h + j] = acc
            } } } }
            return out
        }
        let rounded = reference(x.map(roundedToBFloat16), w.map(roundedToBFloat16)), exact = reference(x, w)
        // NCHW -> nChw16c and back.
        func blocked(_ v: [Float], channels: Int) -> Tensor {
            let t = Tensor(shape: [v.count])
            for s in 0..<n { for c in 0..<channels { for q in 0..<(h * h) {
                t.data[((s * channels / 16 + c / 16) * h * h + q) * 16 + c % 16] = v[(s * channels + c) * h * h + q]
            } } }
            return t
        }
        let held = randomValues(n * co * h * h, seed: 14)
        let input = blocked(x, channels: ci), output = accumulate ? blocked(held, channels: co) : Tensor(shape: [n * co * h * h])
        let weights = Tensor(shape: [co, ci, kernel, kernel], values: w), bias = Tensor(shape: [co], values: b)
        let conv = ConvolutionPrimitive(batch: n, inChannels: ci, outChannels: co, height: h, width: h, kernel: kernel,
                                        padding: padding, weights: weights.data, bias: bias.data, accumulate: accumulate,
                                        precision: .bf16, scratch: ScratchArena())
        #expect(conv.precision == .bf16)
        #expect(conv.implementation.contains("bf16"), "oneDNN chose \(conv.implementation)")
        conv(input.data, output.data)
        var errRounded = 0.0, errExact = 0.0, scale = 0.0
        for s in 0..<n { for o in 0..<co { for q in 0..<(h * h) {
            let i = (s * co + o) * h * h + q
            let got = Double(output.data[((s * co / 16 + o / 16) * h * h + q) * 16 + o % 16]) - (accumulate ? Double(held[i]) : 0)
            errRounded = max(errRounded, abs(got - rounded[i])); errExact = max(errExact, abs(got - exact[i]))
            scale = max(scale, abs(exact[i]))
        } } }
        #expect(errRounded < 2e-6 * scale, "against the rounded operands: \(errRounded / scale)")
        #expect(errExact > 3e-4 * scale, "against the exact operands: \(errExact / scale) (no rounding happened?)")
    }

    /// AVX512-BF16's conversion instruction (what the fused GroupNorm pass rounds with on such CPUs)
    /// gives the closed form's bits on ties, both signs, the extremes of the float32 range and zero.
    @Test(.enabled(if: CPUFeatures.current.avx512BF16, "the CPU has no AVX512-BF16"))
    func hardwareRoundingIsTheClosedForm() {
        let ulp: Float = 1.0 / 128
        var values: [Float] = [0, -0.0, 1, 1 + ulp / 2, 1 + 3 * ulp / 2, -(1 + ulp / 2), 1 + 0.51 * ulp, -3.1415927,
                               .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNormalMagnitude, 65_504, 1e-30, -7e22]
        values += randomValues(16 * 8 - values.count, seed: 61).enumerated().map { $1 * Float(1 << ($0 % 20)) }
        let stride = 24
        let out = UnsafeMutablePointer<UInt16>.allocate(capacity: values.count / 16 * stride)
        defer { out.deallocate() }
        values.withUnsafeBufferPointer { dd_store_bfloat16($0.baseAddress!, values.count / 16, out, stride) }
        let wrong = values.indices.filter { UInt32(out[$0 / 16 * stride + $0 % 16]) << 16 != roundedToBFloat16(values[$0]).bitPattern }
        #expect(wrong.isEmpty, "differs at \(wrong.map { values[$0] })")
    }

    /// The bf16 kernel follows the CPU's flags as /proc/cpuinfo lists them: AMX tiles (channels-last)
    /// where there is amx_bf16, AVX512-BF16 over the blocked layout where there is only avx512_bf16.
    @Test(.enabled(if: cpuHasBFloat16, "the CPU has neither AVX512-BF16 nor AMX-BF16"))
    func bf16KernelFollowsTheCPUFlags() throws {
        let text = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("flags") })
        let amx = line.split(separator: " ").contains("amx_bf16")
        let c = 64, h = 14
        let w = Tensor(shape: [c, c, 3, 3], values: randomValues(c * c * 9, seed: 31)), bias = Tensor(shape: [c], values: randomValues(c, seed: 32))
        for kernel in [3, 1] {
            let conv = ConvolutionPrimitive(batch: 8, inChannels: c, outChannels: c, height: h, width: h, kernel: kernel, padding: kernel / 2,
                                            weights: w.data, bias: bias.data, accumulate: true, precision: .bf16, scratch: ScratchArena())
            #expect(conv.implementation.contains(amx ? "avx512_core_amx" : "avx512_core_bf16"), "oneDNN chose \(conv.implementation)")
            #expect(conv.bfloat16InputLayout == (amx ? .nhwc : .blocked16))
        }
    }

    /// GroupNorm's affine + SiLU written straight into bfloat16 equals the float32 pass rounded (the
    /// closed form), and a convolution fed that equals the convolution converting float32 itself.
    @Test(.enabled(if: cpuHasBFloat16, "the CPU has neither AVX512-BF16 nor AMX-BF16"))
    func fusedBFloat16ActivationMatchesTheConversion() {
        let n = 2, c = 32, h = 7, pixels = h * h
        let x = Tensor(shape: [n * c * pixels], values: randomValues(n * c * pixels, seed: 21).map { $0 * 4 })
        let a = Tensor(shape: [n * c], values: randomValues(n * c, seed: 22)), b = Tensor(shape: [n * c], values: randomValues(n * c, seed: 23))
        let y = Tensor(shape: [n * c * pixels])
        affineActivation(x.data, y.data, batch: n, pixels: pixels, channels: c, a: a.data, b: b.data, silu: true)
        let half = UnsafeMutablePointer<UInt16>.allocate(capacity: n * c * pixels)
        defer { half.deallocate() }
        affineActivationBFloat16(x.data, half, batch: n, pixels: pixels, channels: c, a: a.data, b: b.data, silu: true)
        let mismatches = (0 ..< n * c * pixels).filter { UInt32(half[$0]) << 16 != roundedToBFloat16(y.data[$0]).bitPattern }
        #expect(mismatches.isEmpty, "\(mismatches.count) values differ from the rounded float32 pass")
        // The same pass written channels-last: value (image, channel, pixel) at (image * pixels + pixel) * c + channel.
        let channelsLast = UnsafeMutablePointer<UInt16>.allocate(capacity: n * c * pixels)
        defer { channelsLast.deallocate() }
        affineActivationBFloat16(x.data, channelsLast, batch: n, pixels: pixels, channels: c, a: a.data, b: b.data, silu: true, nhwcOutput: true)
        var misplaced = 0
        for s in 0..<n { for ch in 0..<c { for q in 0..<pixels
            where channelsLast[(s * pixels + q) * c + ch] != half[((s * c / 16 + ch / 16) * pixels + q) * 16 + ch % 16] { misplaced += 1 } } }
        #expect(misplaced == 0, "\(misplaced) channels-last values differ from the blocked ones")

        let w = Tensor(shape: [c, c, 3, 3], values: randomValues(c * c * 9, seed: 24)), bias = Tensor(shape: [c], values: randomValues(c, seed: 25))
        let conv = ConvolutionPrimitive(batch: n, inChannels: c, outChannels: c, height: h, width: h, kernel: 3, padding: 1,
                                        weights: w.data, bias: bias.data, precision: .bf16, scratch: ScratchArena())
        #expect(conv.takesBFloat16)
        let viaConversion = Tensor(shape: [n * c * pixels]), fused = Tensor(shape: [n * c * pixels])
        conv(y.data, viaConversion.data)
        conv(bfloat16: conv.bfloat16InputLayout == .nhwc ? channelsLast : half, fused.data)
        #expect(fused.array == viaConversion.array)
    }

    /// The shipped UNet in bf16 against PyTorch's float32 output: within bfloat16's accuracy, and
    /// far from float32's agreement (so the bf16 kernels ran).
    @Test(.enabled(if: cpuHasBFloat16, "the CPU has neither AVX512-BF16 nor AMX-BF16"))
    func shippedUNetInBFloat16TracksFloat32Reference() throws {
        guard let (bundle, io) = ShippedBundleParityTests.available("fashion-mnist") else {
            Issue.record("the shipped bundle or its fixture is missing"); return
        }
        let x = try io.tensor("x"), t = try io.integers("t"), y = try io.integers("y"), reference = try io.tensor("out")
        let fp32 = try bundle.makeUNet()
        let bf16 = try ADMUNet(fp32, precision: .bf16)
        #expect(bf16.precision == .bf16)
        let e32 = relativeError(try fp32.forward(x, timesteps: t, classes: y), reference)
        let e16 = relativeError(try bf16.forward(x, timesteps: t, classes: y), reference)
        print("shipped UNet against PyTorch float32: fp32 \(e32), bf16 \(e16)")
        #expect(e16 < 2e-2)
        #expect(e16 > 20 * e32)
    }

    @Test func bf16IsRefusedByNameWithoutTheInstructions() throws {
        let net = try FixtureCase("tiny-unet-cond").bundle.makeUNet()
        var avx512Only = CPUFeatures()
        avx512Only.avx = true; avx512Only.avx2 = true; avx512Only.fma = true; avx512Only.avx512 = true
        for features in [CPUFeatures(), avx512Only] {
            #expect {
                _ = try ADMUNet(net, precision: .bf16, features: features)
            } throws: { error in
                let text = "\(error)"
                return text.contains("avx512_bf16") && text.contains("amx_bf16") && text.contains("precision bf16")
            }
        }
        var bf16CPU = avx512Only
        bf16CPU.avx512BF16 = true
        #expect(try ADMUNet(net, precision: .bf16, features: bf16CPU).precision == .bf16)
        #expect(try ADMUNet(net, precision: .fp32, features: CPUFeatures()).precision == .fp32)
    }

    @Test func bf16WithoutAMXIsCautionedAboutSpeed() {
        var bf16CPU = CPUFeatures()
        bf16CPU.avx = true; bf16CPU.avx2 = true; bf16CPU.fma = true; bf16CPU.avx512 = true; bf16CPU.avx512BF16 = true
        var amxCPU = bf16CPU
        amxCPU.amxBF16 = true
        let caution = ComputePrecision.bf16.speedCaution(on: bf16CPU)
        #expect(caution?.contains("no amx_bf16") == true && caution?.contains("slower than fp32") == true)
        #expect(ComputePrecision.bf16.speedCaution(on: amxCPU) == nil)
        #expect(ComputePrecision.bf16.speedCaution(on: CPUFeatures()) == nil)      // refused there, not cautioned
        #expect(ComputePrecision.fp32.speedCaution(on: bf16CPU) == nil)
    }
}
