import Foundation

/// NCSN annealed Langevin dynamics driven by an eps-model's score.
///
/// Works in the variance-exploding view y = x_t / sqrt(abar_t), sigma = sqrt((1 - abar_t) / abar_t),
/// score_y = -eps(x_t, t) / sigma. The requested levels, geometric from sigmaMax to sigmaMin, are each
/// mapped to the model timestep whose sigma is nearest in log sigma; the mapped sigmas are then used
/// throughout (score, step size alpha_i = eps sigma_i^2 / sigma_L^2). Each level runs
/// y <- y + alpha_i score + sqrt(2 alpha_i) z. The state between steps is the network input
/// x = sqrt(abar_t) y of the current level; the initial y is sigma_1 z, i.e. x = sqrt(1 - abar_{t_1}) z.
/// The optional final denoising step (NCSNv2) returns y + sigma_L^2 score = y - sigma_L eps, the
/// x0 estimate, clipped if asked. Classifier guidance adds to the score: eps' = eps - sqrt(1 - abar) g.
public struct LangevinSampler: DiffusionSampler {
    /// The settings.
    public let parameters: LangevinParameters
    /// The model timestep of each level, level 0 first (noisiest).
    public let levelTimesteps: [Int]
    /// The variance-exploding sigma of each level's model timestep.
    public let levelSigmas: [Double]
    /// The step size alpha_i of each level.
    public let stepSizes: [Double]
    /// Whether the final x0 estimate is clipped to [-1, 1].
    public let clipDenoised: Bool
    let transforms: [PredictionTransform]
    let inverseSqrtAlphaBar: [Float]
    let nextScales: [Float]

    /// Creates the sampler over the full T-step schedule of the model.
    public init(schedule: NoiseSchedule, parameters p: LangevinParameters, prediction: PredictionType, clipDenoised: Bool = true) {
        ensure(p.levels >= 1 && p.stepsPerLevel >= 1 && p.stepSize > 0 && p.sigmaMin > 0 && p.sigmaMax >= p.sigmaMin,
                     "invalid Langevin parameters")
        parameters = p
        self.clipDenoised = clipDenoised
        let logSigmas = (0..<schedule.count).map { log(schedule.varianceExplodingSigma(at: $0)) }
        let requested = BetaSchedule.evenlySpaced(from: log(p.sigmaMax), to: log(p.sigmaMin), count: p.levels)
        let timesteps = requested.map { target in
            var best = 0
            for t in 1..<max(schedule.count, 1) where abs(logSigmas[t] - target) < abs(logSigmas[best] - target) { best = t }
            return best
        }
        levelTimesteps = timesteps
        levelSigmas = levelTimesteps.map { schedule.varianceExplodingSigma(at: $0) }
        let smallest = levelSigmas.last!
        stepSizes = levelSigmas.map { p.stepSize * $0 * $0 / (smallest * smallest) }
        transforms = levelTimesteps.map { PredictionTransform(prediction: prediction, alphaBar: schedule.alphasCumprod[$0]) }
        inverseSqrtAlphaBar = levelTimesteps.map { Float(1 / schedule.alphasCumprod[$0].squareRoot()) }
        // The state is rescaled to the next level's network input at the end of each level; after the
        // last Langevin step it is y itself unless the denoising step follows.
        nextScales = (0..<p.levels).map { i in
            if i + 1 < p.levels { return Float(schedule.alphasCumprod[timesteps[i + 1]].squareRoot()) }
            return p.finalDenoising ? Float(schedule.alphasCumprod[timesteps[i]].squareRoot()) : 1
        }
        initialNoiseScale = (1 - schedule.alphasCumprod[timesteps[0]]).squareRoot()
    }

    /// levels x stepsPerLevel Langevin steps, plus one if final denoising is on.
    public var stepCount: Int { parameters.levels * parameters.stepsPerLevel + (parameters.finalDenoising ? 1 : 0) }
    /// sqrt(1 - abar) of the first level's timestep (y = sigma_1 z).
    public let initialNoiseScale: Double
    /// The model timestep of the level that chain step k belongs to.
    public func timestep(at step: Int) -> Int { levelTimesteps[min(step / parameters.stepsPerLevel, parameters.levels - 1)] }
    /// Every Langevin step adds noise; the final denoising step does not.
    public func usesNoise(at step: Int) -> Bool { step < parameters.levels * parameters.stepsPerLevel }

    /// One Langevin (or the final denoising) step in place.
    public func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        let level = min(step / parameters.stepsPerLevel, parameters.levels - 1)
        let transform = transforms[level]
        let gradientCoefficient = (classifierGuidance?.scale ?? 0) * transform.sqrtOneMinusAlphaBar
        let clip = clipDenoised
        if !usesNoise(at: step) {
            BatchLoop.run(x: x, modelOutput: modelOutput, gradient: classifierGuidance?.gradient, noise: nil) { xp, op, _, gp, _, lanes in
                let xv = VectorLanes.load(xp, lanes)
                var eps = transform.epsilon(x: xv, output: VectorLanes.load(op, lanes))
                if let gp { eps -= gradientCoefficient * VectorLanes.load(gp, lanes) }
                var x0 = transform.x0(x: xv, epsilon: eps)
                if clip { x0 = VectorLanes.clampUnit(x0) }
                VectorLanes.store(x0, xp, lanes)
            }
            return
        }
        ensure(noise != nil, "a Langevin step needs noise")
        let alpha = stepSizes[level]
        let inverseScale = inverseSqrtAlphaBar[level]
        let scoreCoefficient = Float(alpha / levelSigmas[level])
        let noiseCoefficient = Float((2 * alpha).squareRoot())
        let lastOfLevel = step % parameters.stepsPerLevel == parameters.stepsPerLevel - 1
        let outputScale = lastOfLevel ? nextScales[level] : 1 / inverseScale
        let finalOutput = lastOfLevel && level == parameters.levels - 1 && !parameters.finalDenoising
        BatchLoop.run(x: x, modelOutput: modelOutput, gradient: classifierGuidance?.gradient, noise: noise) { xp, op, _, gp, zp, lanes in
            let xv = VectorLanes.load(xp, lanes)
            var eps = transform.epsilon(x: xv, output: VectorLanes.load(op, lanes))
            if let gp { eps -= gradientCoefficient * VectorLanes.load(gp, lanes) }
            let y = inverseScale * xv - scoreCoefficient * eps + noiseCoefficient * VectorLanes.load(zp!, lanes)
            var next = outputScale * y
            if finalOutput && clip { next = VectorLanes.clampUnit(next) }
            VectorLanes.store(next, xp, lanes)
        }
    }
}
