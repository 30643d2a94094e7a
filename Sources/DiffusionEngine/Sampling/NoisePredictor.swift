/// A denoising network: maps noisy images and ORIGINAL timestep indices to its raw output.
public protocol NoisePredictor {
    /// Channels of the raw output: C (eps, x0 or v) or 2C when the variance is learned (last C channels in [-1, 1]).
    var outputChannels: Int { get }
    /// The raw output [N, outputChannels, H, W] for x [N, C, H, W]; `classes` is nil for an unconditional network.
    func predict(_ x: Tensor, timesteps: [Int], classes: [Int]?) throws -> Tensor
    /// The Extended-Analytic-DPM head whose C raw channels end the output (after the eps and any
    /// variance channels), computed in the same forward pass; nil (the default) without one.
    var covarianceHead: CovarianceHeadKind? { get }
}

extension NoisePredictor {
    /// No covariance head.
    public var covarianceHead: CovarianceHeadKind? { nil }
}

/// The head of Extended-Analytic-DPM (Bao et al. 2022) a network carries.
public enum CovarianceHeadKind: String, Codable, Sendable, Hashable, CaseIterable {
    /// SN-DPM: h -> E[eps^2 | x_n] per pixel; Cov[x0 | x_n] = (betabar/abar)(h - eps_theta^2).
    case sn
    /// NPR-DPM: g -> E[(eps - eps_theta)^2 | x_n] per pixel; Cov[x0 | x_n] = (betabar/abar) g.
    case npr

    /// The bundle file holding the head's weights.
    public var fileName: String { "\(rawValue)-head.safetensors" }
}

/// A noisy classifier's input gradient, used for classifier guidance.
public protocol ClassifierGradient {
    /// grad_x log p(y = classes[n] | x_n, t_n) for x [N, C, H, W] at ORIGINAL timestep indices; shape [N, C, H, W].
    func gradientOfLogProbability(_ x: Tensor, timesteps: [Int], classes: [Int]) throws -> Tensor
}
