/// The Analytic-DPM (Bao et al.) optimal reverse variances of a respaced chain, in float64.
///
/// For the jump s -> r between respaced indices i-1 and i (s is "before the first step", abar = 1, for i = 0):
/// alpha_{s:r} = abar_r / abar_s, beta_{s:r} = 1 - alpha_{s:r}, betabar = 1 - abar,
/// betatilde_{s|r} = beta_{s:r} betabar_s / betabar_r, Cov[x0 | x_r] = clip((betabar_r / abar_r)(1 - Gamma_r), 0, 1)
/// with Gamma indexed by the ORIGINAL timestep r.
public enum AnalyticVariance {
    /// Cov[x0 | x_r] at respaced index i, clipped to [0, 1].
    public static func clippedCovariance(_ s: RespacedSchedule, gamma: [Double], at i: Int) -> Double {
        let abar = s.schedule.alphasCumprod[i]
        return min(max((1 - abar) / abar * (1 - gamma[s.timesteps[i]]), 0), 1)
    }

    /// The variance bound of the jump into the first kept timestep: (c (2/255) sqrt(pi/2))^2.
    public static func lastStepBound(factor c: Double) -> Double {
        let bound = c * 2 / 255 * (Double.pi / 2).squareRoot()
        return bound * bound
    }

    /// Analytic-DDPM: sigma^2 = betatilde_{s|r} + abar_s beta_{s:r}^2 / betabar_r^2 Cov; index 1 bounded, index 0 zero.
    public static func ddpm(_ s: RespacedSchedule, gamma: [Double], lastStepClipFactor c: Double) -> [Double] {
        (0..<s.count).map { i in
            guard i > 0 else { return 0 }
            let abarR = s.schedule.alphasCumprod[i], abarS = s.schedule.alphasCumprodPrevious[i]
            let betaSR = 1 - abarR / abarS
            let betatilde = betaSR * (1 - abarS) / (1 - abarR)
            let cov = clippedCovariance(s, gamma: gamma, at: i)
            let v = betatilde + abarS * betaSR * betaSR / ((1 - abarR) * (1 - abarR)) * cov
            return i == 1 ? min(v, lastStepBound(factor: c)) : v
        }
    }

    /// Analytic-DDIM: lambda^2 = eta^2 betatilde_{s|r},
    /// sigma^2 = lambda^2 + (sqrt(abar_s) - sqrt((betabar_s - lambda^2) abar_r / betabar_r))^2 Cov; index 1 bounded, index 0 zero.
    public static func ddim(_ s: RespacedSchedule, gamma: [Double], eta: Double, lastStepClipFactor c: Double) -> [Double] {
        (0..<s.count).map { i in
            guard i > 0 else { return 0 }
            let lambda2 = ddimLambdaSquared(s, eta: eta, at: i)
            let abarR = s.schedule.alphasCumprod[i], abarS = s.schedule.alphasCumprodPrevious[i]
            let gap = abarS.squareRoot() - ((1 - abarS - lambda2) * abarR / (1 - abarR)).squareRoot()
            let v = lambda2 + gap * gap * clippedCovariance(s, gamma: gamma, at: i)
            return i == 1 ? min(v, lastStepBound(factor: c)) : v
        }
    }

    /// lambda^2 = eta^2 betatilde_{s|r} at respaced index i.
    static func ddimLambdaSquared(_ s: RespacedSchedule, eta: Double, at i: Int) -> Double {
        let abarR = s.schedule.alphasCumprod[i], abarS = s.schedule.alphasCumprodPrevious[i]
        return eta * eta * (1 - abarR / abarS) * (1 - abarS) / (1 - abarR)
    }
}
