/// Float32 coefficients of one ancestral step: mean = a x0 + b x_t (+ Sigma g), x = mean + std z.
struct AncestralStepCoefficients: Sendable {
    var transform: PredictionTransform
    var meanX0: Float
    var meanXt: Float
    /// Fixed (or analytic) variance Sigma and its square root; unused when the variance is learned.
    var variance: Float
    var standardDeviation: Float
    /// Learned range: log Sigma = frac * maxLog + (1 - frac) * minLog, frac = (v + 1) / 2.
    var minLogVariance: Float
    var maxLogVariance: Float
    var learnedVariance: Bool
    var addsNoise: Bool
}

/// The ancestral (DDPM-type) update shared by DDPM and Analytic-DDPM.
enum AncestralStep {
    typealias Vector = SIMD16<Float>

    static func apply(_ k: AncestralStepCoefficients, clipDenoised: Bool, x: Tensor, modelOutput: Tensor,
                      guidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        let noise = k.addsNoise ? noise : nil
        ensure(!k.addsNoise || noise != nil, "this step needs noise")
        let scale = guidance?.scale ?? 0
        BatchLoop.run(x: x, modelOutput: modelOutput, gradient: guidance?.gradient, noise: noise) { xp, op, vp, gp, zp, lanes in
            let xv = VectorLanes.load(xp, lanes)
            let ov = VectorLanes.load(op, lanes)
            var x0 = k.transform.x0(x: xv, output: ov)
            if clipDenoised { x0 = VectorLanes.clampUnit(x0) }
            var mean = k.meanX0 * x0 + k.meanXt * xv
            var std = Vector(repeating: k.standardDeviation)
            var variance = Vector(repeating: k.variance)
            if k.learnedVariance {
                ensure(vp != nil, "learned variance needs 2C output channels")
                let frac = (VectorLanes.load(vp!, lanes) + 1) * 0.5
                let logVariance = frac * k.maxLogVariance + (1 - frac) * k.minLogVariance
                std = VectorLanes.exp(0.5 * logVariance)
                if gp != nil { variance = VectorLanes.exp(logVariance) }
            }
            if let gp { mean += variance * (scale * VectorLanes.load(gp, lanes)) }
            if let zp { mean += std * VectorLanes.load(zp, lanes) }
            VectorLanes.store(mean, xp, lanes)
        }
    }
}
