import Foundation

/// Ancestral sampling (Ho et al., Nichol & Dhariwal) with a fixed small, fixed large or learned-range variance.
///
/// Each step: x0 from the output (clipped to [-1, 1] if asked), mean = posterior mean of the
/// (respaced) schedule, x = mean + Sigma g + sqrt(Sigma) z, no noise at the last step. With
/// classifier guidance the mean shifts by Sigma g (Sigma = betatilde unclipped for fixed small,
/// exp(log Sigma) for learned range), as in guided-diffusion.
public struct DDPMSampler: RespacedChainSampler {
    /// The kept timesteps and their respaced schedule.
    public let schedule: RespacedSchedule
    /// The reverse-step variance.
    public let variance: VarianceType
    /// What the network predicts.
    public let prediction: PredictionType
    /// Whether x0 is clipped to [-1, 1].
    public let clipDenoised: Bool
    let coefficients: [AncestralStepCoefficients]

    /// Creates the sampler over a respaced schedule.
    public init(schedule: RespacedSchedule, variance: VarianceType, prediction: PredictionType, clipDenoised: Bool = true) {
        self.schedule = schedule
        self.variance = variance
        self.prediction = prediction
        self.clipDenoised = clipDenoised
        let s = schedule.schedule
        coefficients = (0..<s.count).reversed().map { i in
            let fixed = s.fixedVariance(variance, at: i) ?? 0
            let fixedLog = s.fixedLogVariance(variance, at: i) ?? 0
            return AncestralStepCoefficients(
                transform: PredictionTransform(prediction: prediction, alphaBar: s.alphasCumprod[i]),
                meanX0: Float(s.posteriorMeanCoefficientX0[i]), meanXt: Float(s.posteriorMeanCoefficientXt[i]),
                variance: Float(fixed), standardDeviation: Float((0.5 * fixedLog).exp()),
                minLogVariance: Float(s.posteriorLogVarianceClipped[i]), maxLogVariance: Float(s.betas[i].logarithm()),
                learnedVariance: variance == .learnedRange, addsNoise: i != 0)
        }
    }

    /// Every step but the last adds noise.
    public func usesNoise(at step: Int) -> Bool { step < schedule.count - 1 }

    /// One ancestral step in place.
    public func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        AncestralStep.apply(coefficients[step], clipDenoised: clipDenoised, x: x, modelOutput: modelOutput,
                            guidance: classifierGuidance, noise: noise)
    }
}

extension Double {
    /// Natural logarithm.
    @inline(__always) func logarithm() -> Double { Foundation.log(self) }
    /// e raised to this power.
    @inline(__always) func exp() -> Double { Foundation.exp(self) }
}
