import Foundation
import Testing
@testable import DiffusionEngine

/// Samplers driven by the exact denoiser of Gaussian data must reproduce that distribution.
@Suite struct SamplerDistributionTests {
    static let mu = 0.3, s = 0.2
    static let shape = ImageShape(channels: 1, height: 64, width: 64)
    static let images = Array(0..<16)   // 65,536 independent samples: relative error of the variance ~0.55%

    func sample(_ configure: (inout SamplingConfiguration) -> Void, prediction: PredictionType = .epsilon,
                varianceOutput: Float? = nil, withGamma: Bool = false,
                classifier: (any ClassifierGradient)? = nil) throws -> Tensor {
        var c = SamplingConfiguration()
        c.diffusion = DiffusionSettings(schedule: .cosine, steps: 1000, prediction: prediction,
                                        variance: varianceOutput == nil ? .fixedSmall : .learnedRange)
        c.clipDenoised = false
        c.seed = 2024
        configure(&c)
        let net = GaussianDataPredictor(schedule: c.diffusion.noiseSchedule, mean: Self.mu, standardDeviation: Self.s,
                                        prediction: prediction, varianceOutput: varianceOutput)
        let pipeline = try SamplingPipeline(configuration: c, predictor: net, classifier: classifier,
                                            gammaTable: withGamma ? net.gammaTable : nil, imageShape: Self.shape)
        return try pipeline.generate(imageIndices: Self.images, classes: classifier == nil ? nil : [Int](repeating: 0, count: Self.images.count))
    }

    func expectGaussian(_ x: Tensor, mean: Double = mu, variance: Double = s * s, relativeVarianceTolerance: Double = 0.03,
                        _ comment: Comment) {
        let m = moments(x)
        #expect(abs(m.mean - mean) < 0.005, "\(comment): mean \(m.mean) vs \(mean)")
        #expect(abs(m.variance - variance) / variance < relativeVarianceTolerance, "\(comment): variance \(m.variance) vs \(variance)")
    }

    /// The exact output law of a DDPM/DDIM chain for this data, from an independent recursion.
    func exact(_ respacing: TimestepRespacing, _ kind: LinearGaussianChain.Kind,
               mean: Double = mu, variance: Double = s * s) throws -> (mean: Double, variance: Double) {
        let r = try RespacedSchedule(base: NoiseSchedule(.cosine, steps: 1000), respacing: respacing)
        return LinearGaussianChain.output(r, kind, dataMean: mean, dataVariance: variance)
    }

    @Test func ddpmFullChain() throws {
        let small = try exact(.full, .ddpm(.fixedSmall))
        #expect(abs(small.variance / (Self.s * Self.s) - 0.981) < 0.001)  // fixed small loses ~2% at T = 1000
        expectGaussian(try sample { $0.sampler = .ddpm }, mean: small.mean, variance: small.variance, "ddpm fixed small")
        let large = try exact(.full, .ddpm(.fixedLarge))
        expectGaussian(try sample { $0.sampler = .ddpm; $0.ddpmVariance = .fixedLarge }, mean: large.mean, variance: large.variance,
                       "ddpm fixed large")
        let fifty = try exact(.sections([50]), .ddpm(.fixedSmall))
        expectGaussian(try sample { $0.respacing = .sections([50]) }, mean: fifty.mean, variance: fifty.variance, "ddpm 50 steps")
    }

    @Test func learnedRangeEndpointsEqualTheFixedVariances() throws {
        let small = try sample { $0.respacing = .sections([50]); $0.ddpmVariance = .fixedSmall }
        let learnedSmall = try sample({ $0.respacing = .sections([50]) }, varianceOutput: -1)
        #expect(zip(small.array, learnedSmall.array).allSatisfy { abs($0 - $1) < 1e-4 })
        let large = try sample { $0.respacing = .sections([50]); $0.ddpmVariance = .fixedLarge }
        let learnedLarge = try sample({ $0.respacing = .sections([50]) }, varianceOutput: 1)
        #expect(zip(large.array, learnedLarge.array).allSatisfy { abs($0 - $1) < 1e-4 })
        #expect(small.array != large.array)
    }

    @Test func ddimDeterministicAndStochastic() throws {
        for (respacing, eta) in [(TimestepRespacing.sections([100]), 0.0), (.ddim(50), 0.0), (.sections([250]), 1.0), (.ddim(20), 0.5)] {
            let law = try exact(respacing, .ddim(eta: eta))
            expectGaussian(try sample { $0.sampler = .ddim; $0.eta = eta; $0.respacing = respacing },
                           mean: law.mean, variance: law.variance, "ddim eta \(eta), \(respacing)")
        }
    }

    @Test func predictionTypesAgree() throws {
        let eps = try sample { $0.sampler = .ddim; $0.respacing = .ddim(25) }
        for p in [PredictionType.sample, .velocity] {
            let other = try sample({ $0.sampler = .ddim; $0.respacing = .ddim(25) }, prediction: p)
            let worst = zip(eps.array, other.array).map { abs($0 - $1) }.max()!
            #expect(worst < 2e-3, "\(p): max difference \(worst)")
        }
    }

    @Test func analyticSamplersAreExactForGaussianDataInTenSteps() throws {
        // The optimal variance is exact for Gaussian data, so even 10 steps give the data distribution
        // once the last-step bound (meant for 8-bit images) is lifted.
        expectGaussian(try sample({ $0.sampler = .analyticDDPM; $0.respacing = .sections([10]); $0.analyticLastStepClipFactor = 1e6 },
                                  withGamma: true), relativeVarianceTolerance: 0.05, "analytic ddpm, 10 steps")
        expectGaussian(try sample({ $0.sampler = .analyticDDIM; $0.respacing = .sections([10]); $0.analyticLastStepClipFactor = 1e6 },
                                  withGamma: true), relativeVarianceTolerance: 0.05, "analytic ddim, 10 steps")
        expectGaussian(try sample({ $0.sampler = .analyticDDIM; $0.eta = 1; $0.respacing = .sections([10]); $0.analyticLastStepClipFactor = 1e6 },
                                  withGamma: true), relativeVarianceTolerance: 0.05, "analytic ddim eta 1, 10 steps")
        // With the bound, the jump into t = 0 keeps at most (2/255 sqrt(pi/2))^2 of its variance.
        let bounded = moments(try sample({ $0.sampler = .analyticDDPM; $0.respacing = .sections([10]) }, withGamma: true))
        #expect(bounded.variance < 0.7 * Self.s * Self.s)
        // Plain DDIM with 10 steps contracts the variance (Cauchy-Schwarz), which Analytic-DDIM corrects.
        let ddim = moments(try sample { $0.sampler = .ddim; $0.respacing = .sections([10]) })
        #expect(ddim.variance < 0.9 * Self.s * Self.s)
    }

    /// NCSN's 10 levels x 100 steps (the engine's defaults are the job schema's 100 x 5).
    static let paperLangevin = LangevinParameters(levels: 10, stepsPerLevel: 100)

    @Test func langevinConverges() throws {
        // Annealing ends near N(mu, s^2 + sigma_L^2) up to Langevin's step-size bias; 5% on the variance.
        expectGaussian(try sample { $0.sampler = .langevin; $0.langevin = Self.paperLangevin }, relativeVarianceTolerance: 0.05, "langevin with final denoising")
        expectGaussian(try sample { $0.sampler = .langevin; $0.langevin = Self.paperLangevin; $0.langevin.finalDenoising = false }, relativeVarianceTolerance: 0.05,
                       "langevin without")
    }

    @Test func classifierGuidanceTargetsThePosterior() throws {
        let c = GaussianLikelihoodClassifier(schedule: NoiseSchedule(.cosine, steps: 1000), priorMean: Self.mu,
                                             priorStandardDeviation: Self.s, observation: 0.6, likelihoodStandardDeviation: 0.15)
        let post = c.posterior
        // With the exact noisy classifier, guided DDIM is DDIM on the exact posterior denoiser.
        let guided = try exact(.sections([100]), .ddim(eta: 0), mean: post.mean, variance: post.variance)
        let ddim = try sample({ $0.sampler = .ddim; $0.respacing = .sections([100]); $0.guidance = .classifier }, classifier: c)
        expectGaussian(ddim, mean: guided.mean, variance: guided.variance, "ddim + classifier")
        let langevin = try sample({ $0.sampler = .langevin; $0.langevin = Self.paperLangevin; $0.guidance = .classifier }, classifier: c)
        expectGaussian(langevin, mean: post.mean, variance: post.variance, relativeVarianceTolerance: 0.05, "langevin + classifier")
        let ddpm = try sample({ $0.sampler = .ddpm; $0.guidance = .classifier }, classifier: c)
        expectGaussian(ddpm, mean: post.mean, variance: post.variance, relativeVarianceTolerance: 0.1, "ddpm + classifier")
    }
}
