import Foundation

/// The ADM UNet as the samplers see it: raw output into a buffer reused per batch size, so a
/// sampling chain allocates no tensors per step. The returned tensor is valid until the next call.
public final class UNetNoisePredictor: NoisePredictor, @unchecked Sendable {
    /// The network.
    public let network: ADMUNet
    private var outputs: [Int: Tensor] = [:]
    private let lock = NSLock()

    /// Wraps a UNet.
    public init(_ network: ADMUNet) { self.network = network }

    /// C, or 2C when the network learns its variance.
    public var outputChannels: Int { network.architecture.outChannels }

    /// The raw network output [N, outputChannels, H, W] (a reused buffer).
    public func predict(_ x: Tensor, timesteps: [Int], classes: [Int]?) throws -> Tensor {
        let n = x.shape.first ?? 0
        let a = network.architecture
        lock.lock()
        let out = outputs[n] ?? Tensor(shape: [n, a.outChannels, a.imageSize, a.imageSize])
        outputs[n] = out
        lock.unlock()
        try network.forward(x, timesteps: timesteps, classes: classes, into: out)
        return out
    }
}

/// The noisy classifier as classifier guidance sees it: grad_x log p(y | x_t, t) into buffers
/// reused per batch size. The returned tensor is valid until the next call.
public final class ClassifierGuidanceGradient: ClassifierGradient, @unchecked Sendable {
    /// The classifier.
    public let network: NoisyClassifier
    private var buffers: [Int: (logits: Tensor, gradient: Tensor)] = [:]
    private let lock = NSLock()

    /// Wraps a noisy classifier.
    public init(_ network: NoisyClassifier) { self.network = network }

    /// The gradient [N, C, H, W] of sum_n log p(classes[n] | x_n, t_n).
    public func gradientOfLogProbability(_ x: Tensor, timesteps: [Int], classes: [Int]) throws -> Tensor {
        let n = x.shape.first ?? 0
        lock.lock()
        let b = buffers[n] ?? (Tensor(shape: [n, network.classCount]), Tensor(shape: x.shape))
        buffers[n] = b
        lock.unlock()
        try network.logProbabilityGradient(x, timesteps: timesteps, classes: classes, logits: b.logits, gradient: b.gradient)
        return b.gradient
    }
}
