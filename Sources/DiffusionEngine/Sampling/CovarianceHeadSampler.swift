import Foundation

/// SN-DPM and NPR-DPM (Bao et al. 2022, "Estimating the Optimal Covariance with Imperfect Mean"):
/// Analytic-DPM's DDPM-type or DDIM-type reverse variance with a per-pixel Cov[x0 | x_r] from a head
/// the network evaluates in the same forward pass (its raw C channels end the model output):
/// SN: Cov = clamp((betabar_r/abar_r)(h - eps^2), 0, 1); NPR: Cov = clamp((betabar_r/abar_r) g, 0, 1),
/// with eps the network's own eps.
///
/// For the jump s -> r: DDPM-type sigma^2 = betatilde_{s|r} + abar_s beta_{s:r}^2 / betabar_r^2 Cov with the
/// posterior mean of the clipped x0; DDIM-type (lambda^2 = eta^2 betatilde_{s|r}) sigma^2 = lambda^2 +
/// (sqrt(abar_s) - sqrt((betabar_s - lambda^2) abar_r / betabar_r))^2 Cov with mean sqrt(abar_s) x0 +
/// sqrt(betabar_s - lambda^2) eps. The jump into the first kept timestep clamps sigma^2 element-wise to
/// [0, (c (2/255) sqrt(pi/2))^2]; the last step adds no noise. Classifier guidance: DDPM-type shifts the mean
/// by sigma^2 s g (per pixel); DDIM-type corrects eps (eps' = eps - sqrt(1 - abar) s g) and re-derives x0,
/// clipped if asked, as Analytic-DDIM does.
public struct CovarianceHeadSampler: RespacedChainSampler {
    /// DDPM-type (ancestral) or DDIM-type steps.
    public enum StepType: Sendable, Hashable { case ddpm, ddim }

    /// The kept timesteps and their respaced schedule.
    public let schedule: RespacedSchedule
    /// Which head the covariance comes from.
    public let head: CovarianceHeadKind
    /// DDPM-type or DDIM-type.
    public let type: StepType
    /// lambda^2 = eta^2 betatilde (DDIM-type only).
    public let eta: Double
    /// Whether x0 is clipped to [-1, 1].
    public let clipDenoised: Bool
    let coefficients: [Coefficients]

    /// Per chain step, float32 from float64: mean = onX0 x0 + onXt x (DDPM) or onX0 x0 + onEps eps (DDIM);
    /// sigma^2 = varianceBase + varianceSlope Cov, at most varianceBound; Cov from covarianceScale = betabar/abar.
    struct Coefficients: Sendable {
        var transform: PredictionTransform
        var onX0: Float
        var onXt: Float
        var onEps: Float
        var varianceBase: Float
        var varianceSlope: Float
        var varianceBound: Float
        var covarianceScale: Float
        var addsNoise: Bool
    }

    /// Creates the sampler; `lastStepClipFactor` is c in the bound of the jump into the first kept timestep.
    public init(schedule: RespacedSchedule, head: CovarianceHeadKind, type: StepType, eta: Double = 0,
                prediction: PredictionType, clipDenoised: Bool = true, lastStepClipFactor: Double) {
        self.schedule = schedule
        self.head = head
        self.type = type
        self.eta = type == .ddim ? eta : 0
        self.clipDenoised = clipDenoised
        let s = schedule.schedule
        let bound = AnalyticVariance.lastStepBound(factor: lastStepClipFactor)
        let etaValue = self.eta
        coefficients = (0..<s.count).reversed().map { i in
            let abarR = s.alphasCumprod[i], abarS = s.alphasCumprodPrevious[i]
            let betaSR = 1 - abarR / abarS
            let betatilde = betaSR * (1 - abarS) / (1 - abarR)
            var k = Coefficients(transform: PredictionTransform(prediction: prediction, alphaBar: abarR),
                                 onX0: 0, onXt: 0, onEps: 0, varianceBase: 0, varianceSlope: 0,
                                 varianceBound: i == 1 ? Float(bound) : .infinity,
                                 covarianceScale: Float((1 - abarR) / abarR), addsNoise: i != 0)
            switch type {
            case .ddpm:
                k.onX0 = Float(s.posteriorMeanCoefficientX0[i])
                k.onXt = Float(s.posteriorMeanCoefficientXt[i])
                if i > 0 {
                    k.varianceBase = Float(betatilde)
                    k.varianceSlope = Float(abarS * betaSR * betaSR / ((1 - abarR) * (1 - abarR)))
                }
            case .ddim:
                let lambda2 = i == 0 ? 0 : etaValue * etaValue * betatilde
                k.onX0 = Float(abarS.squareRoot())
                k.onEps = Float(max(1 - abarS - lambda2, 0).squareRoot())
                if i > 0 {
                    let gap = abarS.squareRoot() - ((1 - abarS - lambda2) * abarR / (1 - abarR)).squareRoot()
                    k.varianceBase = Float(lambda2)
                    k.varianceSlope = Float(gap * gap)
                }
            }
            return k
        }
    }

    /// Every step but the last adds noise.
    public func usesNoise(at step: Int) -> Bool { step < schedule.count - 1 }

    /// Cov[x0 | x_r] per lane from the head value and the network's eps, clamped to [0, 1].
    @inline(__always)
    static func covariance(_ head: CovarianceHeadKind, scale: Float, headValue: SIMD16<Float>, eps: SIMD16<Float>) -> SIMD16<Float> {
        let raw = head == .sn ? scale * (headValue - eps * eps) : scale * headValue
        return pointwiseMin(pointwiseMax(raw, SIMD16(repeating: 0)), SIMD16(repeating: 1))
    }

    /// One step in place. `modelOutput` is [N, base + C, H, W]: eps (or x0, v), any learned-variance
    /// channels (ignored), then the head's C channels.
    public func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        let k = coefficients[step]
        let noise = k.addsNoise ? noise : nil
        ensure(!k.addsNoise || noise != nil, "this step needs noise")
        ensure(x.shape.count == 4 && modelOutput.shape.count == 4 && modelOutput.shape[0] == x.shape[0],
                     "model output \(modelOutput.shape) does not fit state \(x.shape)")
        let n = x.shape[0], perImage = x.count / max(n, 1)
        let outPerImage = modelOutput.count / max(n, 1)
        ensure(outPerImage == 2 * perImage || outPerImage == 3 * perImage, "the model output lacks the covariance head")
        let headOffset = outPerImage - perImage
        let scale = classifierGuidance?.scale ?? 0
        let gradientCoefficient = scale * k.transform.sqrtOneMinusAlphaBar
        let head = self.head, type = self.type, clip = clipDenoised
        for image in 0..<n {
            let xBase = x.data + image * perImage
            let oBase = UnsafePointer(modelOutput.data + image * outPerImage)
            let gBase = classifierGuidance.map { UnsafePointer($0.gradient.data + image * perImage) }
            let zBase = noise.map { UnsafePointer($0.data + image * perImage) }
            var j = 0
            while j < perImage {
                let lanes = min(16, perImage - j)
                let xv = VectorLanes.load(xBase + j, lanes)
                let ov = VectorLanes.load(oBase + j, lanes)
                var eps = k.transform.epsilon(x: xv, output: ov)
                let cov = Self.covariance(head, scale: k.covarianceScale, headValue: VectorLanes.load(oBase + headOffset + j, lanes), eps: eps)
                let variance = pointwiseMin(k.varianceBase + k.varianceSlope * cov, SIMD16(repeating: k.varianceBound))
                var x0 = k.transform.x0(x: xv, output: ov)
                if clip { x0 = VectorLanes.clampUnit(x0) }
                var next: SIMD16<Float>
                switch type {
                case .ddpm:
                    next = k.onX0 * x0 + k.onXt * xv
                    if let gBase, k.addsNoise { next += variance * (scale * VectorLanes.load(gBase + j, lanes)) }
                case .ddim:
                    if let gBase {
                        eps -= gradientCoefficient * VectorLanes.load(gBase + j, lanes)
                        x0 = k.transform.x0(x: xv, epsilon: eps)
                        if clip { x0 = VectorLanes.clampUnit(x0) }
                    }
                    next = k.onX0 * x0 + k.onEps * eps
                }
                if let zBase { next += variance.squareRoot() * VectorLanes.load(zBase + j, lanes) }
                VectorLanes.store(next, xBase + j, lanes)
                j += 16
            }
        }
    }
}
