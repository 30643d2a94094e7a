/// A denoising network: maps noisy images and ORIGINAL timestep indices to its raw output.
public protocol NoisePredictor {
    /// Channels of the raw output: C (eps, x0 or v) or 2C when the variance is learned (last C channels in [-1, 1]).
    var outputChannels: Int { get }
    /// The raw output [N, outputChannels, H, W] for x [N, C, H, W]; `classes` is nil for an unconditional network.
    func predict(_ x: Tensor, timesteps: [Int], classes: [Int]?) throws -> Tensor
}

/// A noisy classifier's input gradient, used for classifier guidance.
public protocol ClassifierGradient {
    /// grad_x log p(y = classes[n] | x_n, t_n) for x [N, C, H, W] at ORIGINAL timestep indices; shape [N, C, H, W].
    func gradientOfLogProbability(_ x: Tensor, timesteps: [Int], classes: [Int]) throws -> Tensor
}
