import Foundation
import Testing
@testable import DiffusionEngine

/// Analytic-DPM variances against the paper's formulas, computed here from the original alphabar.
@Suite struct AnalyticVarianceTests {
    static let gamma = (0..<1000).map { 0.55 + 0.4 * sin(Double($0) * 0.37) }

    func reference(_ kind: SamplerKind, schedule: BetaSchedule, respacing: TimestepRespacing, eta: Double, c: Double) throws -> [Double] {
        let base = NoiseSchedule(schedule, steps: 1000)
        let kept = try respacing.timesteps(trainingSteps: 1000)
        return kept.indices.map { i in
            if i == 0 { return 0 }
            let r = kept[i], s = kept[i - 1]
            let abarR = base.alphasCumprod[r], abarS = base.alphasCumprod[s]
            let betaSR = 1 - abarR / abarS
            let betatilde = betaSR * (1 - abarS) / (1 - abarR)
            let cov = min(max((1 - abarR) / abarR * (1 - Self.gamma[r]), 0), 1)
            var v: Double
            if kind == .analyticDDPM {
                v = betatilde + abarS * pow(betaSR / (1 - abarR), 2) * cov
            } else {
                let lambda2 = eta * eta * betatilde
                v = lambda2 + pow(abarS.squareRoot() - ((1 - abarS - lambda2) * abarR / (1 - abarR)).squareRoot(), 2) * cov
            }
            if i == 1 { v = min(v, pow(c * 2 / 255 * (Double.pi / 2).squareRoot(), 2)) }
            return v
        }
    }

    func pipelineSampler(_ kind: SamplerKind, schedule: BetaSchedule, respacing: TimestepRespacing, eta: Double) throws -> (any DiffusionSampler, Double) {
        var c = SamplingConfiguration()
        c.sampler = kind
        c.diffusion = DiffusionSettings(schedule: schedule, variance: .fixedSmall)
        c.respacing = respacing
        c.eta = eta
        let net = GaussianDataPredictor(schedule: c.diffusion.noiseSchedule, mean: 0, standardDeviation: 0.5)
        let p = try SamplingPipeline(configuration: c, predictor: net, gammaTable: Self.gamma,
                                     imageShape: ImageShape(channels: 1, height: 2, width: 2))
        return (p.sampler, p.configuration.analyticLastStepClipFactor!)
    }

    @Test(arguments: [BetaSchedule.linear, .cosine])
    func variancesMatchThePaper(_ schedule: BetaSchedule) throws {
        for respacing in [TimestepRespacing.sections([10]), .ddim(50), .trailing(25)] {
            let (ddpm, cDDPM) = try pipelineSampler(.analyticDDPM, schedule: schedule, respacing: respacing, eta: 0)
            #expect(cDDPM == (schedule == .linear ? 2 : 1))
            let expected = try reference(.analyticDDPM, schedule: schedule, respacing: respacing, eta: 0, c: cDDPM)
            let got = (ddpm as! AnalyticDDPMSampler).reverseVariances
            for (a, b) in zip(got, expected) { #expect(abs(a - b) <= 1e-9 * max(b, 1e-12)) }
            for eta in [0.0, 0.5, 1.0] {
                let (ddim, cDDIM) = try pipelineSampler(.analyticDDIM, schedule: schedule, respacing: respacing, eta: eta)
                #expect(cDDIM == 1)
                let expected = try reference(.analyticDDIM, schedule: schedule, respacing: respacing, eta: eta, c: cDDIM)
                let got = (ddim as! AnalyticDDIMSampler).reverseVariances
                for (a, b) in zip(got, expected) { #expect(abs(a - b) <= 1e-9 * max(b, 1e-12)) }
            }
        }
    }

    @Test func lastStepsAreBoundedThenNoiseless() throws {
        let (s, c) = try pipelineSampler(.analyticDDPM, schedule: .linear, respacing: .sections([10]), eta: 0)
        let v = (s as! AnalyticDDPMSampler).reverseVariances
        #expect(v[0] == 0)
        #expect(v[1] <= pow(c * 2 / 255 * (Double.pi / 2).squareRoot(), 2))
        #expect(!s.usesNoise(at: s.stepCount - 1) && s.usesNoise(at: s.stepCount - 2))
    }
}
