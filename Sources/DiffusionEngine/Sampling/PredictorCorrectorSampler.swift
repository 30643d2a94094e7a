import Foundation

/// Predictor-corrector sampling (Song et al. 2021, score SDE) on the VP (DDPM) process: at each kept
/// timestep, from the noisiest, `correctorSteps` Langevin corrector steps and then one ancestral predictor
/// step, each with its own network evaluation, all on the model's score = -eps / sqrt(1 - abar)
/// (classifier guidance adds s g to it).
///
/// Corrector (Langevin, signal-to-noise ratio r): step = 2 alpha (r ||z|| / ||score||)^2 with
/// alpha = 1 - beta (the respaced step's own beta), x = x + step score + sqrt(2 step) z. The reference
/// takes the norms as batch means of per-image L2 norms, which would make an image depend on its batch
/// mates; here they are each image's own norms, so every image stays a function of its own seed and index.
/// Predictor (VP ancestral): x = (x + beta score) / sqrt(1 - beta) + sqrt(beta) z; the last one returns
/// its mean (no noise).
public struct PredictorCorrectorSampler: DiffusionSampler {
    /// The kept timesteps and their respaced schedule.
    public let schedule: RespacedSchedule
    /// The corrector's signal-to-noise ratio r.
    public let snr: Double
    /// Corrector steps before each predictor step.
    public let correctorSteps: Int
    let transforms: [PredictionTransform]
    let betas: [Double]
    let sqrtOneMinusAlphaBar: [Double]

    /// Creates the sampler over a respaced schedule.
    public init(schedule: RespacedSchedule, snr: Double, correctorSteps: Int, prediction: PredictionType) {
        ensure(snr >= 0 && snr.isFinite && correctorSteps >= 0, "invalid predictor-corrector settings")
        self.schedule = schedule
        self.snr = snr
        self.correctorSteps = correctorSteps
        let s = schedule.schedule
        let order = Array((0..<s.count).reversed())
        transforms = order.map { PredictionTransform(prediction: prediction, alphaBar: s.alphasCumprod[$0]) }
        betas = order.map { s.betas[$0] }
        sqrtOneMinusAlphaBar = order.map { (1 - s.alphasCumprod[$0]).squareRoot() }
    }

    /// (corrector steps + 1) network evaluations per kept timestep.
    public var stepCount: Int { schedule.count * (correctorSteps + 1) }
    /// x_T ~ N(0, I).
    public var initialNoiseScale: Double { 1 }
    /// The kept timestep of the group chain step k belongs to.
    public func timestep(at step: Int) -> Int { schedule.timesteps[schedule.count - 1 - step / (correctorSteps + 1)] }
    /// Every step but the last predictor step draws noise.
    public func usesNoise(at step: Int) -> Bool { step < stepCount - 1 }

    /// One corrector or predictor step in place.
    public func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        let group = step / (correctorSteps + 1)
        let isPredictor = step % (correctorSteps + 1) == correctorSteps
        let transform = transforms[group]
        let scoreScale = Float(-1 / sqrtOneMinusAlphaBar[group])
        let scale = classifierGuidance?.scale ?? 0
        let noise = usesNoise(at: step) ? noise : nil
        ensure(!usesNoise(at: step) || noise != nil, "this step needs noise")
        let n = x.shape[0], perImage = x.count / max(n, 1), outPerImage = modelOutput.count / max(n, 1)
        let beta = betas[group]
        let score = UnsafeMutablePointer<Float>.allocate(capacity: perImage)
        defer { score.deallocate() }
        for image in 0..<n {
            let xp = x.data + image * perImage
            let op = UnsafePointer(modelOutput.data + image * outPerImage)
            let gp = classifierGuidance.map { UnsafePointer($0.gradient.data + image * perImage) }
            let zp = noise.map { UnsafePointer($0.data + image * perImage) }
            var j = 0
            while j < perImage {
                let lanes = min(16, perImage - j)
                var s = scoreScale * transform.epsilon(x: VectorLanes.load(xp + j, lanes), output: VectorLanes.load(op + j, lanes))
                if let gp { s += scale * VectorLanes.load(gp + j, lanes) }
                VectorLanes.store(s, score + j, lanes)
                j += 16
            }
            let a: Float, b: Float, c: Float
            if isPredictor {
                // x = (x + beta score) / sqrt(1 - beta) + sqrt(beta) z
                let inverse = 1 / (1 - beta).squareRoot()
                (a, b, c) = (Float(inverse), Float(beta * inverse), Float(beta.squareRoot()))
            } else {
                var scoreSquares = 0.0, noiseSquares = 0.0
                for e in 0..<perImage {
                    scoreSquares += Double(score[e]) * Double(score[e])
                    noiseSquares += Double(zp![e]) * Double(zp![e])
                }
                let ratio = scoreSquares > 0 ? snr * snr * noiseSquares / scoreSquares : 0
                let stepSize = 2 * (1 - beta) * ratio
                (a, b, c) = (1, Float(stepSize), Float((2 * stepSize).squareRoot()))
            }
            j = 0
            while j < perImage {
                let lanes = min(16, perImage - j)
                var next = a * VectorLanes.load(xp + j, lanes) + b * VectorLanes.load(score + j, lanes)
                if let zp { next += c * VectorLanes.load(zp + j, lanes) }
                VectorLanes.store(next, xp + j, lanes)
                j += 16
            }
        }
    }
}
