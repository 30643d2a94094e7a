import Foundation
import Testing
@testable import DiffusionEngine

@Suite struct NoiseScheduleTests {
    @Test func cosineScheduleMatchesClosedForm() {
        let betas = BetaSchedule.cosine.betas(steps: 1000)
        #expect(betas.count == 1000)
        #expect(abs(betas[0] - 4.128e-5) < 5e-8)
        #expect(betas[999] == 0.999)
        #expect(betas.dropLast().allSatisfy { $0 < 0.999 })
        let f = { (t: Double) -> Double in pow(cos((t + 0.008) / 1.008 * Double.pi / 2), 2) }
        for i in [0, 1, 500, 998] {
            #expect(abs(betas[i] - (1 - f(Double(i + 1) / 1000) / f(Double(i) / 1000))) < 1e-15)
        }
        let schedule = NoiseSchedule(.cosine, steps: 1000)
        #expect(abs(schedule.alphasCumprod[999] - 2.43e-9) / 2.43e-9 < 0.01)
        // Before the clipped step alphabar follows f(t)/f(0) exactly.
        #expect(abs(schedule.alphasCumprod[600] - f(0.601) / f(0)) < 1e-12)
    }

    @Test func linearScheduleEndpoints() {
        let betas = BetaSchedule.linear.betas(steps: 1000)
        #expect(betas.first == 1e-4)
        #expect(betas.last == 0.02)
        #expect(abs(betas[1] - (1e-4 + 0.0199 / 999)) < 1e-15)
        let short = BetaSchedule.linear.betas(steps: 250)
        #expect(abs(short.first! - 4e-4) < 1e-15)
        #expect(short.last! == 0.08)
    }

    @Test func posteriorQuantitiesMatchDefinitions() {
        let s = NoiseSchedule(.linear, steps: 100)
        #expect(s.posteriorVariance[0] == 0)
        #expect(s.posteriorLogVarianceClipped[0] == log(s.posteriorVariance[1]))
        for i in [1, 7, 99] {
            let abar = s.alphasCumprod[i], prev = s.alphasCumprod[i - 1]
            #expect(abs(s.alphasCumprodPrevious[i] - prev) == 0)
            #expect(abs(s.posteriorVariance[i] - s.betas[i] * (1 - prev) / (1 - abar)) < 1e-15)
            #expect(abs(s.posteriorMeanCoefficientX0[i] - prev.squareRoot() * s.betas[i] / (1 - abar)) < 1e-15)
            #expect(abs(s.posteriorMeanCoefficientXt[i] - (1 - s.betas[i]).squareRoot() * (1 - prev) / (1 - abar)) < 1e-15)
            // The posterior mean coefficients reproduce x_t when x0 is consistent with a noiseless x_t.
            #expect(abs(s.posteriorMeanCoefficientX0[i] + s.posteriorMeanCoefficientXt[i] * abar.squareRoot() - prev.squareRoot()) < 1e-12)
        }
        #expect(s.fixedVariance(.fixedLarge, at: 0) == s.posteriorVariance[1])
        #expect(s.fixedVariance(.fixedLarge, at: 5) == s.betas[5])
        #expect(s.fixedLogVariance(.fixedSmall, at: 0) == s.posteriorLogVarianceClipped[0])
        #expect(s.fixedVariance(.learnedRange, at: 3) == nil)
    }

    @Test func respacedBetasKeepAlphaBar() throws {
        let base = NoiseSchedule(.cosine, steps: 1000)
        let r = try RespacedSchedule(base: base, respacing: .ddim(50))
        #expect(r.count == 50)
        for (i, t) in r.timesteps.enumerated() {
            #expect(abs(r.schedule.alphasCumprod[i] - base.alphasCumprod[t]) / base.alphasCumprod[t] < 1e-12)
        }
        #expect(r.schedule.betas[0] == base.betas[0])
        #expect(abs(r.schedule.betas[1] - (1 - base.alphasCumprod[20] / base.alphasCumprod[0])) < 1e-15)
    }
}
