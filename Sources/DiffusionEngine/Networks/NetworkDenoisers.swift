import Foundation

/// Evaluation in batches of one fixed size, which makes an image's result independent of its batch.
///
/// oneDNN's convolutions give bit-identical per-image results for any position of an image within
/// a batch of a given size, but other bits for another batch size. The adapters below therefore
/// run the networks on exactly `rows` images per call (a short batch is padded with zeros), so a
/// resumed job, another batch size or classifier-free guidance's doubled batch reproduce every
/// image to the bit. 64 is where the UNet reaches its full speed on this CPU (about 360 img/s
/// against 240 at 16); a job of fewer images pays for the padding.
struct FixedChunks {
    /// Images per network call: every call has exactly this many rows.
    static let rows = 64

    private var inputs: [Int: Tensor] = [:]

    /// Runs `body(chunkInput, rowsUsed, firstRow)` over x in calls of `rows` images; the chunk
    /// input is a reused [rows, ...] tensor whose unused rows are zero.
    mutating func forEachChunk(of x: Tensor, _ body: (Tensor, Int, Int) throws -> Void) rethrows {
        let n = x.shape.first ?? 0
        let perImage = n > 0 ? x.count / n : 0
        let shape = [Self.rows] + x.shape.dropFirst()
        let chunk = inputs[perImage] ?? Tensor(shape: shape)
        inputs[perImage] = chunk
        chunk.reshape(shape)
        var first = 0
        while first < n {
            let used = min(Self.rows, n - first)
            chunk.data.update(from: x.data + first * perImage, count: used * perImage)
            if used < Self.rows { (chunk.data + used * perImage).update(repeating: 0, count: (Self.rows - used) * perImage) }
            try body(chunk, used, first)
            first += used
        }
    }

    /// `values[first ..< first + used]` padded to `rows` entries by repeating the first one.
    static func padded(_ values: [Int], first: Int, used: Int) -> [Int] {
        let slice = Array(values[first ..< first + used])
        return slice + Array(repeating: slice[0], count: rows - used)
    }
}

/// The ADM UNet as the samplers see it: evaluated in padded batches (see `FixedChunks`) into a
/// buffer reused per batch size, so a sampling chain allocates no tensors per step and every
/// image is a function of its own input only. The returned tensor is valid until the next call.
public final class UNetNoisePredictor: NoisePredictor, @unchecked Sendable {
    /// The network.
    public let network: ADMUNet
    private var outputs: [Int: Tensor] = [:]
    private var chunks = FixedChunks()
    private var chunkOutput: Tensor?
    private let lock = NSLock()

    /// Wraps a UNet.
    public init(_ network: ADMUNet) { self.network = network }

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
        try chunks.forEachChunk(of: x) { input, used, first in
            let chunkOut = chunkOutput ?? Tensor(shape: [FixedChunks.rows, oc, a.imageSize, a.imageSize])
            chunkOutput = chunkOut
            try network.forward(input, timesteps: FixedChunks.padded(timesteps, first: first, used: used),
                                classes: classes.map { FixedChunks.padded($0, first: first, used: used) }, into: chunkOut)
            (out.data + first * perImage).update(from: chunkOut.data, count: used * perImage)
        }
        return out
    }
}

/// The noisy classifier as classifier guidance sees it: grad_x log p(y | x_t, t), evaluated in
/// fixed chunks (see `FixedChunks`) into buffers reused per batch size. The returned tensor is
/// valid until the next call.
public final class ClassifierGuidanceGradient: ClassifierGradient, @unchecked Sendable {
    /// The classifier.
    public let network: NoisyClassifier
    private var gradients: [Int: Tensor] = [:]
    private var chunks = FixedChunks()
    private var chunkBuffers: (logits: Tensor, gradient: Tensor)?
    private let lock = NSLock()

    /// Wraps a noisy classifier.
    public init(_ network: NoisyClassifier) { self.network = network }

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
        try chunks.forEachChunk(of: x) { input, used, first in
            let buffers = chunkBuffers ?? (Tensor(shape: [FixedChunks.rows, network.classCount]), Tensor(shape: input.shape))
            chunkBuffers = buffers
            let (logits, gradient) = buffers
            try network.logProbabilityGradient(input, timesteps: FixedChunks.padded(timesteps, first: first, used: used),
                                               classes: FixedChunks.padded(classes, first: first, used: used),
                                               logits: logits, gradient: gradient)
            (out.data + first * perImage).update(from: gradient.data, count: used * perImage)
        }
        return out
    }
}
