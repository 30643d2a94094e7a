import Foundation

/// The ADM UNet as the samplers see it: evaluated in padded chunks (see `ChunkLadder`) into a
/// buffer reused per batch size, so a sampling chain allocates no tensors per step and every
/// image is a function of its own input only. The returned tensor is valid until the next call.
public final class UNetNoisePredictor: NoisePredictor, @unchecked Sendable {
    /// The network.
    public let network: ADMUNet
    private var outputs: [Int: Tensor] = [:]
    private var chunks: ChunkLadder?
    private var chunkOutputs: [Int: Tensor] = [:]
    private let lock = NSLock()

    /// Wraps a UNet.
    public init(_ network: ADMUNet) { self.network = network }

    /// The chunk sizes in use (probed on the first call).
    public var chunkSizes: [Int] {
        lock.lock(); defer { lock.unlock() }
        return (try? ladder().sizes) ?? [ChunkLadder.fullRows]
    }

    /// The ladder, probed once: the candidates whose outputs match a full chunk's bit for bit.
    private func ladder() throws -> ChunkLadder {
        let a = network.architecture
        return try ChunkLadder.cached(&chunks, imageShape: [a.inChannels, a.imageSize, a.imageSize],
                                      candidates: ChunkLadder.laneMultiples) { x, t in
            let rows = t.count
            let out = Tensor(shape: [rows, network.outputChannels, a.imageSize, a.imageSize])
            try network.forward(x, timesteps: t, classes: a.numClasses.map { k in (0 ..< rows).map { $0 % k } }, into: out)
            return out.array
        }
    }

    /// C, or 2C when the network learns its variance; plus C with a covariance head.
    public var outputChannels: Int { network.outputChannels }
    /// The network's covariance head, if any.
    public var covarianceHead: CovarianceHeadKind? { network.covarianceHead }

    /// The raw network output [N, outputChannels, H, W] (a reused buffer).
    public func predict(_ x: Tensor, timesteps: [Int], classes: [Int]?) throws -> Tensor {
        let n = x.shape.first ?? 0
        let a = network.architecture
        guard timesteps.count == n, classes.map({ $0.count == n }) ?? true else {
            throw EngineError.invalidInput("\(timesteps.count) timesteps and \(classes?.count ?? 0) classes for batch \(n)")
        }
        lock.lock(); defer { lock.unlock() }
        let oc = network.outputChannels
        let out = outputs[n] ?? Tensor(shape: [n, oc, a.imageSize, a.imageSize])
        outputs[n] = out
        let perImage = oc * a.imageSize * a.imageSize
        var ladder = try self.ladder()
        try ladder.forEachChunk(of: x) { input, used, first in
            let rows = input.shape[0]
            let chunkOut = chunkOutputs[rows] ?? Tensor(shape: [rows, oc, a.imageSize, a.imageSize])
            chunkOutputs[rows] = chunkOut
            try network.forward(input, timesteps: ChunkLadder.padded(timesteps, first: first, used: used, rows: rows),
                                classes: classes.map { ChunkLadder.padded($0, first: first, used: used, rows: rows) }, into: chunkOut)
            (out.data + first * perImage).update(from: chunkOut.data, count: used * perImage)
        }
        chunks = ladder
        return out
    }
}

/// The noisy classifier as classifier guidance sees it: grad_x log p(y | x_t, t), evaluated in
/// padded chunks (see `ChunkLadder`) into buffers reused per batch size. The returned tensor is
/// valid until the next call.
public final class ClassifierGuidanceGradient: ClassifierGradient, @unchecked Sendable {
    /// The classifier.
    public let network: NoisyClassifier
    private var gradients: [Int: Tensor] = [:]
    private var chunks: ChunkLadder?
    private var chunkBuffers: [Int: (logits: Tensor, gradient: Tensor)] = [:]
    private let lock = NSLock()

    /// Wraps a noisy classifier.
    public init(_ network: NoisyClassifier) { self.network = network }

    /// The chunk sizes in use (probed on the first call).
    public var chunkSizes: [Int] {
        lock.lock(); defer { lock.unlock() }
        return (try? ladder().sizes) ?? [ChunkLadder.fullRows]
    }

    /// The ladder, probed once on the gradient itself.
    private func ladder() throws -> ChunkLadder {
        let a = network.architecture
        return try ChunkLadder.cached(&chunks, imageShape: [a.inChannels, a.imageSize, a.imageSize]) { x, t in
            try network.logProbabilityGradient(x, timesteps: t, classes: t.indices.map { $0 % network.classCount }).gradient.array
        }
    }

    /// The gradient [N, C, H, W] of sum_n log p(classes[n] | x_n, t_n).
    public func gradientOfLogProbability(_ x: Tensor, timesteps: [Int], classes: [Int]) throws -> Tensor {
        let n = x.shape.first ?? 0
        guard timesteps.count == n, classes.count == n else {
            throw EngineError.invalidInput("\(timesteps.count) timesteps and \(classes.count) classes for batch \(n)")
        }
        lock.lock(); defer { lock.unlock() }
        let out = gradients[n] ?? Tensor(shape: x.shape)
        gradients[n] = out
        let perImage = n > 0 ? x.count / n : 0
        var ladder = try self.ladder()
        try ladder.forEachChunk(of: x) { input, used, first in
            let rows = input.shape[0]
            let buffers = chunkBuffers[rows] ?? (Tensor(shape: [rows, network.classCount]), Tensor(shape: input.shape))
            chunkBuffers[rows] = buffers
            let (logits, gradient) = buffers
            try network.logProbabilityGradient(input, timesteps: ChunkLadder.padded(timesteps, first: first, used: used, rows: rows),
                                               classes: ChunkLadder.padded(classes, first: first, used: used, rows: rows),
                                               logits: logits, gradient: gradient)
            (out.data + first * perImage).update(from: gradient.data, count: used * perImage)
        }
        chunks = ladder
        return out
    }
}
