import Foundation
import Testing
@testable import DiffusionEngine

@Suite struct SamplerCombinationTests {
    @Test(arguments: SamplerKind.allCases, GuidanceKind.allCases)
    func everySamplerRunsWithEveryGuidance(_ kind: SamplerKind, _ guidance: GuidanceKind) throws {
        var c = SamplingConfiguration()
        c.sampler = kind
        c.guidance = guidance
        c.guidanceScale = 2
        c.nullClass = 5
        switch kind {
        case .langevin: c.langevin = LangevinParameters(levels: 4, stepsPerLevel: 3)
        default: c.respacing = .ddim(10)
        }
        if kind.usesEta { c.eta = 0.5 }
        let schedule = NoiseSchedule(.cosine, steps: 1000)
        let net = GaussianDataPredictor(schedule: schedule, mean: 0.1, standardDeviation: 0.3, classMeans: [1: 0.5, 5: 0],
                                        varianceOutput: 0.2)
        let classifier = GaussianLikelihoodClassifier(schedule: schedule, priorMean: 0.1, priorStandardDeviation: 0.3,
                                                      observation: 0.5, likelihoodStandardDeviation: 0.2)
        // The SN / NPR samplers read the exact covariance head appended to the output (after the variance channels).
        let predictor: any NoisePredictor = kind.covarianceHead.map { GaussianHeadPredictor(net, head: $0) } ?? net
        func pipeline() throws -> SamplingPipeline {
            try SamplingPipeline(configuration: c, predictor: predictor, classifier: classifier, gammaTable: net.gammaTable,
                                 imageShape: ImageShape(channels: 1, height: 3, width: 11))
        }
        if kind.covarianceHead == .sn && guidance == .classifierFree {
            // Refused by name: SN's h - eps^2 needs the unguided eps.
            #expect(throws: SamplingError.self) { try pipeline() }
            return
        }
        let p = try pipeline()
        let x = try p.generate(imageIndices: [0, 1], classes: [1, 1])
        #expect(x.buffer.allSatisfy { $0.isFinite && abs($0) <= 1 })
        #expect(net.calls.count == p.stepCount)
        #expect(net.calls.allSatisfy { $0.batch == (guidance == .classifierFree ? 4 : 2) })
    }

    @Test func langevinLevelsMapToNearestModelTimesteps() {
        let schedule = NoiseSchedule(.cosine, steps: 1000)
        let p = LangevinParameters(levels: 10, stepsPerLevel: 5, stepSize: 2e-5, sigmaMax: 1, sigmaMin: 0.01)
        let sampler = LangevinSampler(schedule: schedule, parameters: p, prediction: .epsilon)
        #expect(sampler.stepCount == 51)
        let sigma = (0..<1000).map { schedule.varianceExplodingSigma(at: $0) }
        for (level, t) in sampler.levelTimesteps.enumerated() {
            let target = log(1.0) + (log(0.01) - log(1.0)) * Double(level) / 9
            let best = (0..<1000).min { abs(log(sigma[$0]) - target) < abs(log(sigma[$1]) - target) }!
            #expect(t == best)
            #expect(abs(log(sampler.levelSigmas[level]) - target) < 0.25)   // the timestep grid is coarse near t = 0
            #expect(abs(sampler.stepSizes[level] - 2e-5 * pow(sigma[t] / sampler.levelSigmas[9], 2)) < 1e-15)
        }
        #expect(sampler.timestep(at: 0) == sampler.levelTimesteps[0])
        #expect(sampler.timestep(at: 49) == sampler.levelTimesteps[9] && sampler.timestep(at: 50) == sampler.levelTimesteps[9])
        #expect(sampler.usesNoise(at: 49) && !sampler.usesNoise(at: 50))
        #expect(abs(sampler.initialNoiseScale - (1 - schedule.alphasCumprod[sampler.levelTimesteps[0]]).squareRoot()) < 1e-15)
    }
}
