/// Float32 coefficients of one DDIM-type step: x = a x0 + b eps + std z.
struct ImplicitStepCoefficients: Sendable {
    var transform: PredictionTransform
    var sqrtAlphaBarPrevious: Float
    var directionCoefficient: Float
    var standardDeviation: Float
    var addsNoise: Bool
}

/// The DDIM-type update shared by DDIM and Analytic-DDIM.
///
/// Classifier guidance corrects the score: eps' = eps - sqrt(1 - abar_t) g, x0' = (x - sqrt(1 - abar_t) eps') / sqrt(abar_t).
enum ImplicitStep {
    /// Where the eps of the update comes from.
    enum EpsilonSource {
        /// Re-derived from the clipped x0 (guided-diffusion's DDIM); guided x0' is not re-clipped.
        case clippedX0
        /// The network's own eps (Analytic-DPM's DDIM); guided x0' is clipped like x0.
        case network
    }

    static func apply(_ k: ImplicitStepCoefficients, epsilonSource: EpsilonSource, clipDenoised: Bool, x: Tensor,
                      modelOutput: Tensor, guidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        let noise = k.addsNoise ? noise : nil
        ensure(!k.addsNoise || noise != nil, "this step needs noise")
        let gradientCoefficient = (guidance?.scale ?? 0) * k.transform.sqrtOneMinusAlphaBar
        BatchLoop.run(x: x, modelOutput: modelOutput, gradient: guidance?.gradient, noise: noise) { xp, op, _, gp, zp, lanes in
            let xv = VectorLanes.load(xp, lanes)
            let ov = VectorLanes.load(op, lanes)
            var x0 = k.transform.x0(x: xv, output: ov)
            if clipDenoised { x0 = VectorLanes.clampUnit(x0) }
            var eps: SIMD16<Float>
            switch epsilonSource {
            case .clippedX0: eps = k.transform.epsilon(x: xv, x0: x0)
            case .network: eps = k.transform.epsilon(x: xv, output: ov)
            }
            if let gp {
                eps -= gradientCoefficient * VectorLanes.load(gp, lanes)
                x0 = k.transform.x0(x: xv, epsilon: eps)
                if epsilonSource == .network && clipDenoised { x0 = VectorLanes.clampUnit(x0) }
            }
            var next = k.sqrtAlphaBarPrevious * x0 + k.directionCoefficient * eps
            if let zp { next += k.standardDeviation * VectorLanes.load(zp, lanes) }
            VectorLanes.store(next, xp, lanes)
        }
    }
}
