/// DDIM (Song et al.) with stochasticity eta.
///
/// sigma = eta sqrt((1 - abar_prev)/(1 - abar)) sqrt(1 - abar/abar_prev);
/// x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z (no noise at the last step).
/// Like guided-diffusion (and unlike diffusers' default), eps is re-derived from the clipped x0,
/// so with clipping off it equals the network's eps.
public struct DDIMSampler: RespacedChainSampler {
    /// The kept timesteps and their respaced schedule.
    public let schedule: RespacedSchedule
    /// Stochasticity: 0 is deterministic DDIM, 1 matches the DDPM posterior variance.
    public let eta: Double
    /// What the network predicts.
    public let prediction: PredictionType
    /// Whether x0 is clipped to [-1, 1].
    public let clipDenoised: Bool
    let coefficients: [ImplicitStepCoefficients]

    /// Creates the sampler over a respaced schedule.
    public init(schedule: RespacedSchedule, eta: Double, prediction: PredictionType, clipDenoised: Bool = true) {
        self.schedule = schedule
        self.eta = eta
        self.prediction = prediction
        self.clipDenoised = clipDenoised
        let s = schedule.schedule
        coefficients = (0..<s.count).reversed().map { i in
            let abar = s.alphasCumprod[i], abarPrevious = s.alphasCumprodPrevious[i]
            let sigma = eta * ((1 - abarPrevious) / (1 - abar)).squareRoot() * (1 - abar / abarPrevious).squareRoot()
            return ImplicitStepCoefficients(
                transform: PredictionTransform(prediction: prediction, alphaBar: abar),
                sqrtAlphaBarPrevious: Float(abarPrevious.squareRoot()),
                directionCoefficient: Float(max(1 - abarPrevious - sigma * sigma, 0).squareRoot()),
                standardDeviation: Float(sigma), addsNoise: i != 0 && sigma > 0)
        }
    }

    /// Steps with sigma > 0, except the last, add noise.
    public func usesNoise(at step: Int) -> Bool { coefficients[step].addsNoise }

    /// One DDIM step in place.
    public func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        ImplicitStep.apply(coefficients[step], epsilonSource: .clippedX0, clipDenoised: clipDenoised, x: x,
                           modelOutput: modelOutput, guidance: classifierGuidance, noise: noise)
    }
}
