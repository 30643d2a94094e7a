/// Analytic-DDIM: mean = sqrt(abar_s) x0 + sqrt(betabar_s - lambda^2) eps with the network's own eps
/// (as the authors do; plain DDIM here re-derives eps from the clipped x0) and the Analytic-DPM variance.
///
/// No noise at the last step; the jump into the first kept timestep is bounded as for Analytic-DDPM.
/// Classifier guidance corrects the score (eps' = eps - sqrt(1 - abar) g) and re-derives x0, clipped if asked.
public struct AnalyticDDIMSampler: RespacedChainSampler {
    /// The kept timesteps and their respaced schedule.
    public let schedule: RespacedSchedule
    /// lambda^2 = eta^2 betatilde.
    public let eta: Double
    /// The reverse variances by respaced index (0 at index 0).
    public let reverseVariances: [Double]
    /// Whether x0 is clipped to [-1, 1].
    public let clipDenoised: Bool
    let coefficients: [ImplicitStepCoefficients]

    /// Creates the sampler; `gamma` has one entry per ORIGINAL timestep.
    public init(schedule: RespacedSchedule, gamma: [Double], eta: Double, prediction: PredictionType,
                clipDenoised: Bool = true, lastStepClipFactor: Double) {
        ensure(gamma.count > schedule.timesteps.last!, "the Gamma table must cover every original timestep")
        self.schedule = schedule
        self.eta = eta
        self.clipDenoised = clipDenoised
        let variances = AnalyticVariance.ddim(schedule, gamma: gamma, eta: eta, lastStepClipFactor: lastStepClipFactor)
        reverseVariances = variances
        let s = schedule.schedule
        coefficients = (0..<s.count).reversed().map { i in
            let abarS = s.alphasCumprodPrevious[i]
            let lambda2 = i == 0 ? 0 : AnalyticVariance.ddimLambdaSquared(schedule, eta: eta, at: i)
            return ImplicitStepCoefficients(
                transform: PredictionTransform(prediction: prediction, alphaBar: s.alphasCumprod[i]),
                sqrtAlphaBarPrevious: Float(abarS.squareRoot()),
                directionCoefficient: Float(max(1 - abarS - lambda2, 0).squareRoot()),
                standardDeviation: Float(variances[i].squareRoot()), addsNoise: i != 0)
        }
    }

    /// Every step but the last adds noise.
    public func usesNoise(at step: Int) -> Bool { step < schedule.count - 1 }

    /// One Analytic-DDIM step in place.
    public func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        ImplicitStep.apply(coefficients[step], epsilonSource: .network, clipDenoised: clipDenoised, x: x,
                           modelOutput: modelOutput, guidance: classifierGuidance, noise: noise)
    }
}
