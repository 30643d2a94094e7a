/// Analytic-DDPM: the ancestral posterior mean with the clipped x0 and the Analytic-DPM variance.
///
/// No noise at the last step; the jump into the first kept timestep has its variance bounded by
/// (c (2/255) sqrt(pi/2))^2. Classifier guidance shifts the mean by sigma^2 g (none at the last step).
public struct AnalyticDDPMSampler: RespacedChainSampler {
    /// The kept timesteps and their respaced schedule.
    public let schedule: RespacedSchedule
    /// The reverse variances by respaced index (0 at index 0).
    public let reverseVariances: [Double]
    /// Whether x0 is clipped to [-1, 1].
    public let clipDenoised: Bool
    let coefficients: [AncestralStepCoefficients]

    /// Creates the sampler; `gamma` has one entry per ORIGINAL timestep (E||eps_theta(x_t, t)||^2 / d).
    public init(schedule: RespacedSchedule, gamma: [Double], prediction: PredictionType,
                clipDenoised: Bool = true, lastStepClipFactor: Double) {
        ensure(gamma.count > schedule.timesteps.last!, "the Gamma table must cover every original timestep")
        self.schedule = schedule
        self.clipDenoised = clipDenoised
        let variances = AnalyticVariance.ddpm(schedule, gamma: gamma, lastStepClipFactor: lastStepClipFactor)
        reverseVariances = variances
        let s = schedule.schedule
        coefficients = (0..<s.count).reversed().map { i in
            AncestralStepCoefficients(
                transform: PredictionTransform(prediction: prediction, alphaBar: s.alphasCumprod[i]),
                meanX0: Float(s.posteriorMeanCoefficientX0[i]), meanXt: Float(s.posteriorMeanCoefficientXt[i]),
                variance: Float(variances[i]), standardDeviation: Float(variances[i].squareRoot()),
                minLogVariance: 0, maxLogVariance: 0, learnedVariance: false, addsNoise: i != 0)
        }
    }

    /// Every step but the last adds noise.
    public func usesNoise(at step: Int) -> Bool { step < schedule.count - 1 }

    /// One Analytic-DDPM step in place.
    public func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        AncestralStep.apply(coefficients[step], clipDenoised: clipDenoised, x: x, modelOutput: modelOutput,
                            guidance: classifierGuidance, noise: noise)
    }
}
