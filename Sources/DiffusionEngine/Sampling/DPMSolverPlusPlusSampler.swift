import Foundation

/// DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order data-prediction solver, as diffusers'
/// `DPMSolverMultistepScheduler` runs it with its defaults (solver_order 2, algorithm_type dpmsolver++,
/// solver_type midpoint, lower_order_final, final_sigmas_type zero, no thresholding).
///
/// Chain step k goes from the kept timestep t_k (kept timesteps walked from the last down to the first)
/// to t_{k+1}, and the last step to sigma = 0. With alpha = sqrt(abar), s = sqrt(1 - abar),
/// lambda = log(alpha / s), h = lambda_{k+1} - lambda_k and x0_k the data estimate at step k:
/// first order (the first and the last step): x' = (s_{k+1}/s_k) x - alpha_{k+1} (e^{-h} - 1) x0_k;
/// second order (midpoint): with r = (lambda_k - lambda_{k-1}) / h and D1 = (x0_k - x0_{k-1}) / r,
/// x' = (s_{k+1}/s_k) x - alpha_{k+1} (e^{-h} - 1) (x0_k + D1 / 2). The last step returns x0 itself.
///
/// It is multistep: each step needs the previous step's x0 estimate, which the pipeline carries per image
/// as auxiliary state (`auxiliaryStateCount` = 1), so every image stays a function of its own chain.
/// x0 is clipped to [-1, 1] when `clipDenoised` is on (diffusers' default does not clip; its thresholding
/// with sample_max_value 1 is that clip); with clipping off the updates are diffusers' exactly.
/// x0 = (x - s eps) / alpha in that order, as diffusers computes it: at the noisiest steps the form
/// x / alpha - sqrt(1/abar - 1) eps of the other samplers cancels two numbers of order 1/alpha in float32.
/// Classifier guidance corrects the score as for DDIM: eps' = eps - sqrt(1 - abar) g, x0 re-derived.
/// The timesteps are any respacing's; diffusers' default spacing is `TimestepRespacing.dpmSolver(N)`.
public struct DPMSolverPlusPlusSampler: RespacedChainSampler {
    /// The kept timesteps and their respaced schedule.
    public let schedule: RespacedSchedule
    /// Whether x0 is clipped to [-1, 1].
    public let clipDenoised: Bool
    let transforms: [PredictionTransform]
    let coefficients: [Coefficients]

    /// x' = a x + b x0 + c x0_previous, float32 (computed in float64).
    struct Coefficients: Sendable {
        var onX: Float
        var onEstimate: Float
        var onPreviousEstimate: Float
        /// Whether the step is of second order (reads the previous estimate).
        var secondOrder: Bool
    }

    /// Creates the solver over a respaced schedule.
    public init(schedule: RespacedSchedule, prediction: PredictionType, clipDenoised: Bool = true) {
        self.schedule = schedule
        self.clipDenoised = clipDenoised
        let s = schedule.schedule
        let count = s.count
        // Chain order: the alphabar of chain step k, and 1 after the last step (sigma = 0).
        let alphaBars = (0..<count).reversed().map { s.alphasCumprod[$0] }
        transforms = alphaBars.map { PredictionTransform(prediction: prediction, alphaBar: $0) }
        func alpha(_ k: Int) -> Double { k < count ? alphaBars[k].squareRoot() : 1 }
        func sigma(_ k: Int) -> Double { k < count ? (1 - alphaBars[k]).squareRoot() : 0 }
        func lambda(_ k: Int) -> Double { log(alpha(k)) - log(sigma(k)) }
        coefficients = (0..<count).map { k in
            if k == count - 1 {
                // Into sigma = 0: h = inf, so x' = alpha x0 = x0.
                return Coefficients(onX: 0, onEstimate: 1, onPreviousEstimate: 0, secondOrder: false)
            }
            let h = lambda(k + 1) - lambda(k)
            let a = sigma(k + 1) / sigma(k)
            let b = -alpha(k + 1) * expm1(-h)
            if k == 0 {
                return Coefficients(onX: Float(a), onEstimate: Float(b), onPreviousEstimate: 0, secondOrder: false)
            }
            let r = (lambda(k) - lambda(k - 1)) / h
            let half = 0.5 / r
            return Coefficients(onX: Float(a), onEstimate: Float(b * (1 + half)), onPreviousEstimate: Float(-b * half),
                                secondOrder: true)
        }
    }

    /// One image-sized tensor: the previous step's x0 estimate.
    public var auxiliaryStateCount: Int { 1 }

    /// Deterministic: no step draws noise.
    public func usesNoise(at step: Int) -> Bool { false }

    /// The stateless entry point cannot run a multistep solver.
    public func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        preconditionFailure("dpm-solver++ needs its auxiliary state: call step(_:x:auxiliary:...)")
    }

    /// One solver step in place; `auxiliary` [N, C, H, W] holds the previous x0 estimate on entry and
    /// this step's on exit.
    public func step(_ step: Int, x: Tensor, auxiliary: Tensor?, modelOutput: Tensor,
                     classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        guard let previous = auxiliary, previous.count == x.count else {
            preconditionFailure("dpm-solver++ needs an auxiliary state of the state's shape")
        }
        let k = coefficients[step], transform = transforms[step], clip = clipDenoised
        let gradientCoefficient = (classifierGuidance?.scale ?? 0) * transform.sqrtOneMinusAlphaBar
        let offset = { (p: UnsafeMutablePointer<Float>) in p - x.data }
        BatchLoop.run(x: x, modelOutput: modelOutput, gradient: classifierGuidance?.gradient, noise: nil) { xp, op, _, gp, _, lanes in
            let xv = VectorLanes.load(xp, lanes)
            let ov = VectorLanes.load(op, lanes)
            var x0: SIMD16<Float>
            if let gp {
                let eps = transform.epsilon(x: xv, output: ov) - gradientCoefficient * VectorLanes.load(gp, lanes)
                x0 = (xv - transform.sqrtOneMinusAlphaBar * eps) / transform.sqrtAlphaBar
            } else if transform.prediction == .epsilon {
                x0 = (xv - transform.sqrtOneMinusAlphaBar * ov) / transform.sqrtAlphaBar
            } else {
                x0 = transform.x0(x: xv, output: ov)
            }
            if clip { x0 = VectorLanes.clampUnit(x0) }
            let pp = previous.data + offset(xp)
            var next = k.onX * xv + k.onEstimate * x0
            if k.secondOrder { next += k.onPreviousEstimate * VectorLanes.load(pp, lanes) }
            VectorLanes.store(next, xp, lanes)
            VectorLanes.store(x0, pp, lanes)
        }
    }
}
