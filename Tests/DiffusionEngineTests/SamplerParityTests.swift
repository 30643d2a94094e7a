import Foundation
import Testing
@testable import DiffusionEngine

/// Single sampler steps against the PyTorch reference (Tests/Fixtures/sampler-steps.safetensors):
/// cosine T = 1000, learned-range variance, eps prediction, x0 clipped.
@Suite struct SamplerParityTests {
    static let reader = try! FixtureReader(FixtureReader.fixtures.appendingPathComponent("sampler-steps.safetensors"))
    static let base = NoiseSchedule(.cosine, steps: 1000)

    func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
        zip(a, b).map { abs($0 - $1) }.max()!
    }

    /// Runs each fixture image through chain step (count - 1 - t_index) of `sampler` and compares.
    func check(_ name: String, _ sampler: any DiffusionSampler, respacing: TimestepRespacing, meanKey: String? = nil) throws {
        let r = Self.reader
        #expect(try respacing.timesteps(trainingSteps: 1000) == r.integers("\(name).timesteps"))
        let indices = r.integers("\(name).t_index"), originals = r.integers("\(name).t_original")
        for (image, k) in indices.enumerated() {
            let step = sampler.stepCount - 1 - k
            #expect(sampler.timestep(at: step) == originals[image])
            let x = r.image("\(name).x_t", image)
            let output = r.image("\(name).model_out", image)
            let noise = r.image("\(name).noise", image)
            let expected = r.image("\(name).x_prev", image).array
            sampler.step(step, x: x, modelOutput: output, classifierGuidance: nil, noise: noise)
            let d = maxDifference(x.array, expected)
            #expect(d < 1e-4, "\(name) image \(image) (k = \(k)): max difference \(d)")
            if let meanKey {
                let y = r.image("\(name).x_t", image)
                sampler.step(step, x: y, modelOutput: output, classifierGuidance: nil, noise: Tensor(shape: y.shape))
                let dm = maxDifference(y.array, r.image("\(name).\(meanKey)", image).array)
                #expect(dm < 1e-4, "\(name) image \(image) mean: max difference \(dm)")
            }
        }
    }

    @Test func ddpmLearnedVariance() throws {
        for (name, respacing) in [("ddpm_full", TimestepRespacing.full), ("ddpm_respaced10", .sections([10]))] {
            let sampler = DDPMSampler(schedule: try RespacedSchedule(base: Self.base, respacing: respacing),
                                      variance: .learnedRange, prediction: .epsilon, clipDenoised: true)
            try check(name, sampler, respacing: respacing, meanKey: "mean")
        }
    }

    @Test func ddim() throws {
        for (name, eta) in [("ddim50_eta0", 0.0), ("ddim50_eta05", 0.5)] {
            let sampler = DDIMSampler(schedule: try RespacedSchedule(base: Self.base, respacing: .ddim(50)),
                                      eta: eta, prediction: .epsilon, clipDenoised: true)
            try check(name, sampler, respacing: .ddim(50))
        }
    }
}
