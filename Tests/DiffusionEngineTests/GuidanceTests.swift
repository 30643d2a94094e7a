import Foundation
import Testing
@testable import DiffusionEngine

/// Classifier and classifier-free guidance, one step at a time against hand computation.
@Suite struct GuidanceTests {
    static let base = NoiseSchedule(.cosine, steps: 1000)

    @Test func classifierFreeCombinationKeepsConditionalVariance() {
        // Two images, C = 1, H x W = 1 x 20 (a full and a partial SIMD block), eps then variance channel.
        let n = 2, plane = 20
        var values = [Float]()
        for half in 0..<2 { for image in 0..<n { for ch in 0..<2 { for j in 0..<plane {
            values.append(Float(half * 1000 + image * 100 + ch * 50 + j))
        } } } }
        let raw = Tensor(shape: [2 * n, 2, 1, plane], values: values)
        let out = Tensor(shape: [n, 2, 1, plane])
        SamplingPipeline.combineClassifierFree(raw, firstRow: 0, rows: n, into: out, images: n, guidedCount: plane, perImage: 2 * plane, weight: 0.5)
        for image in 0..<n { for j in 0..<plane {
            let cond = Float(image * 100 + j), uncond = Float(1000 + image * 100 + j)
            #expect(out.data[image * 2 * plane + j] == 1.5 * cond - 0.5 * uncond)
            #expect(out.data[image * 2 * plane + plane + j] == Float(image * 100 + 50 + j))
        } }
    }

    @Test func classifierFreeWithZeroWeightIsTheConditionalModel() throws {
        var c = SamplingConfiguration()
        c.respacing = .ddim(25)
        c.nullClass = 9
        let net = GaussianDataPredictor(schedule: Self.base, mean: 0, standardDeviation: 0.5,
                                        classMeans: [1: 0.4, 9: -0.4], varianceOutput: 0.1)
        let shape = ImageShape(channels: 1, height: 4, width: 4)
        let plain = try SamplingPipeline(configuration: c, predictor: net, imageShape: shape).generate(imageIndices: [0, 1], classes: [1, 1])
        c.guidance = .classifierFree
        c.guidanceScale = 0
        let guided = try SamplingPipeline(configuration: c, predictor: net, imageShape: shape).generate(imageIndices: [0, 1], classes: [1, 1])
        #expect(plain.array == guided.array)
        // The doubled batch carries the classes, then the null class, at the same original timestep.
        #expect(net.calls.last!.batch == 4)
        c.guidanceScale = 3
        _ = try SamplingPipeline(configuration: c, predictor: net, imageShape: shape).generate(imageIndices: [0, 1], classes: [1, 1])
        #expect(net.calls.last!.timesteps == [0, 0, 0, 0])
    }

    /// A constant-output network.
    struct ConstantNetwork: NoisePredictor {
        let values: [Float]   // per output channel
        var outputChannels: Int { values.count }
        func predict(_ x: Tensor, timesteps: [Int], classes: [Int]?) throws -> Tensor {
            let out = Tensor(shape: [x.shape[0], values.count, x.shape[2], x.shape[3]])
            let plane = x.shape[2] * x.shape[3]
            for i in 0..<x.shape[0] { for ch in 0..<values.count { for j in 0..<plane {
                out.data[(i * values.count + ch) * plane + j] = values[ch]
            } } }
            return out
        }
    }

    @Test func ddimScoreCorrection() throws {
        let r = try RespacedSchedule(base: Self.base, respacing: .ddim(10))
        let sampler = DDIMSampler(schedule: r, eta: 0, prediction: .epsilon, clipDenoised: false)
        let x = Tensor(shape: [1, 1, 1, 3], values: [0.5, -0.2, 1.5])
        let eps = Tensor(shape: [1, 1, 1, 3], values: [0.1, 0.3, -0.4])
        let g = Tensor(shape: [1, 1, 1, 3], values: [1, -2, 0.5])
        let k = 3, i = r.count - 1 - k
        let abar = r.schedule.alphasCumprod[i], prev = r.schedule.alphasCumprodPrevious[i]
        let expected = (0..<3).map { j -> Double in
            let e = Double(eps.data[j]) - (1 - abar).squareRoot() * 2.0 * Double(g.data[j])
            let x0 = (Double(x.data[j]) - (1 - abar).squareRoot() * e) / abar.squareRoot()
            return prev.squareRoot() * x0 + (1 - prev).squareRoot() * e
        }
        sampler.step(k, x: x, modelOutput: eps, classifierGuidance: ClassifierGuidanceTerm(gradient: g, scale: 2), noise: nil)
        for j in 0..<3 { #expect(abs(Double(x.data[j]) - expected[j]) < 1e-5) }
    }

    @Test func ancestralMeanShift() throws {
        let r = try RespacedSchedule(base: Self.base, respacing: .sections([50]))
        let k = 10, i = r.count - 1 - k
        let s = r.schedule
        for (variance, v) in [(VarianceType.fixedSmall, Float(0)), (.fixedLarge, 0), (.learnedRange, 0.4)] {
            let sampler = DDPMSampler(schedule: r, variance: variance, prediction: .epsilon, clipDenoised: true)
            let x = Tensor(shape: [1, 1, 1, 2], values: [0.3, -2.5])
            let output = Tensor(shape: [1, variance == .learnedRange ? 2 : 1, 1, 2],
                                values: variance == .learnedRange ? [0.2, -0.1, v, v] : [0.2, -0.1])
            let g = Tensor(shape: [1, 1, 1, 2], values: [0.7, -0.3])
            let z = Tensor(shape: [1, 1, 1, 2], values: [1.1, -0.6])
            let logVariance: Double
            switch variance {
            case .fixedSmall: logVariance = log(s.posteriorVariance[i])
            case .fixedLarge: logVariance = log(s.betas[i])
            case .learnedRange:
                let frac = (Double(v) + 1) / 2
                logVariance = frac * log(s.betas[i]) + (1 - frac) * s.posteriorLogVarianceClipped[i]
            }
            let expected = (0..<2).map { j -> Double in
                let abar = s.alphasCumprod[i]
                let x0 = min(max((Double(x.data[j]) - (1 - abar).squareRoot() * Double(output.data[j])) / abar.squareRoot(), -1), 1)
                let mean = s.posteriorMeanCoefficientX0[i] * x0 + s.posteriorMeanCoefficientXt[i] * Double(x.data[j])
                return mean + exp(logVariance) * 1.5 * Double(g.data[j]) + exp(0.5 * logVariance) * Double(z.data[j])
            }
            sampler.step(k, x: x, modelOutput: output, classifierGuidance: ClassifierGuidanceTerm(gradient: g, scale: 1.5), noise: z)
            for j in 0..<2 { #expect(abs(Double(x.data[j]) - expected[j]) < 1e-5, "\(variance)") }
        }
    }
}
