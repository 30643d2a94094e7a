import Foundation

/// A discrete diffusion schedule with every derived quantity the samplers use, all in float64.
///
/// Index `i` runs over the schedule's own steps: for a respaced schedule it is the
/// position in the kept subsequence, not the original timestep.
public struct NoiseSchedule: Sendable, Hashable {
    /// beta_i, the variance added at step i.
    public let betas: [Double]
    /// alphabar_i = prod_{j <= i} (1 - beta_j).
    public let alphasCumprod: [Double]
    /// alphabar_{i-1}, with 1 before the first step.
    public let alphasCumprodPrevious: [Double]
    /// betatilde_i = beta_i (1 - alphabar_{i-1}) / (1 - alphabar_i), the variance of q(x_{i-1} | x_i, x_0).
    public let posteriorVariance: [Double]
    /// log betatilde_i with index 0 replaced by index 1 (betatilde_0 is zero).
    public let posteriorLogVarianceClipped: [Double]
    /// Coefficient of x_0 in the posterior mean: sqrt(alphabar_{i-1}) beta_i / (1 - alphabar_i).
    public let posteriorMeanCoefficientX0: [Double]
    /// Coefficient of x_i in the posterior mean: sqrt(alpha_i) (1 - alphabar_{i-1}) / (1 - alphabar_i).
    public let posteriorMeanCoefficientXt: [Double]

    /// Number of steps in the schedule.
    public var count: Int { betas.count }

    /// Builds the schedule of a beta family with `steps` steps.
    public init(_ kind: BetaSchedule, steps: Int) {
        self.init(betas: kind.betas(steps: steps))
    }

    /// Builds the schedule from explicit betas, each in (0, 1].
    public init(betas: [Double]) {
        ensure(!betas.isEmpty, "a schedule needs at least one beta")
        ensure(betas.allSatisfy { $0 > 0 && $0 <= 1 }, "betas must lie in (0, 1]")
        let n = betas.count
        self.betas = betas
        var cumprod = [Double](repeating: 0, count: n)
        var running = 1.0
        for i in 0..<n {
            running *= 1 - betas[i]
            cumprod[i] = running
        }
        alphasCumprod = cumprod
        var previous = [Double](repeating: 1, count: n)
        var variance = [Double](repeating: 0, count: n)
        var coefficientX0 = [Double](repeating: 0, count: n)
        var coefficientXt = [Double](repeating: 0, count: n)
        for i in 0..<n {
            let abarPrevious: Double = i == 0 ? 1.0 : cumprod[i - 1]
            let oneMinusAbar: Double = 1 - cumprod[i]
            previous[i] = abarPrevious
            variance[i] = betas[i] * (1 - abarPrevious) / oneMinusAbar
            coefficientX0[i] = betas[i] * abarPrevious.squareRoot() / oneMinusAbar
            coefficientXt[i] = (1 - abarPrevious) * (1 - betas[i]).squareRoot() / oneMinusAbar
        }
        alphasCumprodPrevious = previous
        posteriorVariance = variance
        posteriorMeanCoefficientX0 = coefficientX0
        posteriorMeanCoefficientXt = coefficientXt
        // A one-step schedule has no betatilde_1 to borrow; its (unused) log variance falls back to log beta_0.
        var clippedLog = variance.map { log($0) }
        clippedLog[0] = n > 1 ? log(variance[1]) : log(betas[0])
        posteriorLogVarianceClipped = clippedLog
    }

    /// The variance of the reverse step at index i for a fixed variance type (learned range has none fixed).
    public func fixedVariance(_ type: VarianceType, at i: Int) -> Double? {
        switch type {
        case .fixedSmall: return posteriorVariance[i]
        case .fixedLarge: return i == 0 ? (count > 1 ? posteriorVariance[1] : betas[0]) : betas[i]
        case .learnedRange: return nil
        }
    }

    /// The log variance of the reverse step at index i for a fixed variance type (the clipped log for fixed small).
    public func fixedLogVariance(_ type: VarianceType, at i: Int) -> Double? {
        switch type {
        case .fixedSmall: return posteriorLogVarianceClipped[i]
        case .fixedLarge: return fixedVariance(.fixedLarge, at: i).map { log($0) }
        case .learnedRange: return nil
        }
    }

    /// The schedule that jumps between the kept original timesteps (ascending), with
    /// beta'_k = 1 - alphabar_{t_k} / alphabar_{t_{k-1}} and alphabar before the first kept step equal to 1.
    public func respaced(keeping timesteps: [Int]) -> NoiseSchedule {
        ensure(!timesteps.isEmpty, "respacing keeps at least one timestep")
        var newBetas: [Double] = []
        newBetas.reserveCapacity(timesteps.count)
        var last = 1.0
        var previous = -1
        for t in timesteps {
            ensure(t > previous && t < count, "kept timesteps must ascend within 0..<\(count)")
            newBetas.append(1 - alphasCumprod[t] / last)
            last = alphasCumprod[t]
            previous = t
        }
        return NoiseSchedule(betas: newBetas)
    }

    /// sigma_i = sqrt((1 - alphabar_i) / alphabar_i), the noise level of step i in the variance-exploding view.
    public func varianceExplodingSigma(at i: Int) -> Double {
        ((1 - alphasCumprod[i]) / alphasCumprod[i]).squareRoot()
    }
}
