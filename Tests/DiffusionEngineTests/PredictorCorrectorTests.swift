import Foundation
import Testing
@testable import DiffusionEngine

/// Predictor-corrector sampling: the corrector's step from the image's own norms (so an image is the same
/// whatever its batch), its formulas, its convergence on Gaussian data; and the Langevin preset for [-1, 1].
@Suite struct PredictorCorrectorTests {
    static let base = NoiseSchedule(.cosine, steps: 1000)

    /// One corrector and one predictor step against the formulas, computed here in float64 per image.
    @Test func stepsFollowTheFormulasWithPerImageNorms() throws {
        let schedule = try RespacedSchedule(base: Self.base, respacing: .sections([10]))
        let sampler = PredictorCorrectorSampler(schedule: schedule, snr: 0.16, correctorSteps: 1, prediction: .epsilon)
        #expect(sampler.stepCount == 20)
        #expect(sampler.timestep(at: 0) == 999 && sampler.timestep(at: 1) == 999 && sampler.timestep(at: 2) == schedule.timesteps[8])
        #expect(sampler.usesNoise(at: 18) && !sampler.usesNoise(at: 19))
        func values(_ n: Int, _ seed: Int) -> [Float] { (0..<n).map { Float(sin(Double($0 * 7 + seed)) * 1.3) } }
        let n = 2, per = 16
        let x0 = values(n * per, 1), eps = values(n * per, 2), z = values(n * per, 3)
        for (step, i) in [(4, 7), (5, 7)] {
            let x = Tensor(shape: [n, 1, 4, 4], values: x0)
            sampler.step(step, x: x, modelOutput: Tensor(shape: [n, 1, 4, 4], values: eps), classifierGuidance: nil,
                         noise: Tensor(shape: [n, 1, 4, 4], values: z))
            let abar = schedule.schedule.alphasCumprod[i], beta = schedule.schedule.betas[i]
            for image in 0..<n {
                let r = (image * per)..<((image + 1) * per)
                let score = r.map { -Double(eps[$0]) / (1 - abar).squareRoot() }
                let expected: [Double]
                if step % 2 == 0 {
                    let scoreNorm = score.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    let noiseNorm = r.reduce(0.0) { $0 + Double(z[$1]) * Double(z[$1]) }.squareRoot()
                    let size = 2 * (1 - beta) * pow(0.16 * noiseNorm / scoreNorm, 2)
                    expected = r.enumerated().map { Double(x0[$1]) + size * score[$0] + (2 * size).squareRoot() * Double(z[$1]) }
                } else {
                    expected = r.enumerated().map { (Double(x0[$1]) + beta * score[$0]) / (1 - beta).squareRoot() + beta.squareRoot() * Double(z[$1]) }
                }
                let got = Array(x.array[r])
                let worst = zip(got, expected).map { abs(Double($0) - $1) / max(1, abs($1)) }.max()!
                #expect(worst < 1e-5, "step \(step) image \(image): \(worst)")
            }
        }
    }

    @Test func imagesDoNotDependOnTheirBatch() throws {
        var c = SamplingConfiguration()
        c.sampler = .predictorCorrector
        c.respacing = .sections([12])
        c.diffusion.variance = .fixedSmall
        c.seed = 5
        let predictor = GaussianDataPredictor(schedule: Self.base, mean: 0.2, standardDeviation: 0.4)
        let p = try SamplingPipeline(configuration: c, predictor: predictor, imageShape: ImageShape(channels: 1, height: 4, width: 4))
        #expect(p.configuration.snr == 0.16 && p.configuration.correctorSteps == 1)
        let all = try p.generate(imageIndices: [0, 1, 2, 3], classes: nil)
        for (image, batch) in [(2, [2]), (1, [3, 1]), (0, [0, 0, 5])] {
            let got = try p.generate(imageIndices: batch, classes: nil)
            let slot = batch.firstIndex(of: image)!
            #expect(Array(got.array[(slot * 16)..<((slot + 1) * 16)]) == Array(all.array[(image * 16)..<((image + 1) * 16)]))
        }
        var other = p.configuration  // snr and corrector_steps resolved, which only pc takes
        other.sampler = .ddim
        #expect(throws: SamplingError.self) { try SamplingPipeline(configuration: other, predictor: predictor, imageShape: ImageShape(channels: 1, height: 4, width: 4)) }
    }

    @Test func convergesOnGaussianData() throws {
        var c = SamplingConfiguration()
        c.sampler = .predictorCorrector
        c.respacing = .sections([200])
        c.diffusion.variance = .fixedSmall
        c.clipDenoised = false
        let predictor = GaussianDataPredictor(schedule: Self.base, mean: 0.3, standardDeviation: 0.5)
        let p = try SamplingPipeline(configuration: c, predictor: predictor, imageShape: ImageShape(channels: 1, height: 32, width: 32))
        let m = moments(try p.generate(imageIndices: Array(0..<8), classes: nil))
        #expect(abs(m.mean - 0.3) < 0.03, "mean \(m.mean)")
        #expect(abs(m.variance / 0.25 - 1) < 0.15, "variance \(m.variance)")
    }

    @Test func langevinPresetForDataInMinusOneToOne() {
        let p = LangevinParameters.dataRangeScaled
        #expect(p.sigmaMax == 2 && p.sigmaMin == 0.02 && p.levels == 100 && p.stepsPerLevel == 5 && p.finalDenoising)
        #expect(abs(p.stepSize / (p.sigmaMin * p.sigmaMin) - 0.2) < 1e-12)
        #expect(LangevinParameters() == LangevinParameters(stepSize: 2e-5, sigmaMax: 1, sigmaMin: 0.01))
    }
}
