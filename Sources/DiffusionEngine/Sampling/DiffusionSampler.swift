/// Classifier guidance for one step: g = scale * gradient, gradient = grad_x log p(y | x_t, t).
public struct ClassifierGuidanceTerm {
    /// grad_x log p(y | x_t, t), shape [N, C, H, W].
    public let gradient: Tensor
    /// The guidance scale s.
    public let scale: Float

    /// Pairs a gradient with its scale.
    public init(gradient: Tensor, scale: Float) {
        self.gradient = gradient
        self.scale = scale
    }
}

/// One reverse-process sampler: a fixed chain of steps, each consuming one network evaluation.
///
/// Chain step k = 0 is the noisiest. The state before step k is the network input for step k;
/// after the last step it is the final sample.
public protocol DiffusionSampler: Sendable {
    /// Number of steps (network evaluations) in the chain.
    var stepCount: Int { get }
    /// Standard deviation of the initial state: x = initialNoiseScale * z.
    var initialNoiseScale: Double { get }
    /// The ORIGINAL timestep index the network and the classifier see at chain step k.
    func timestep(at step: Int) -> Int
    /// Whether chain step k adds fresh noise (the pipeline draws it only then).
    func usesNoise(at step: Int) -> Bool
    /// Advances the batch x [N, C, H, W] in place by chain step k, given the raw (already
    /// classifier-free combined) network output, optional classifier guidance and standard normal noise.
    func step(_ step: Int, x: Tensor, modelOutput: Tensor, classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?)
    /// Image-sized tensors of per-image state a multistep sampler carries between steps (0, the
    /// default, for one-step samplers). The pipeline holds them as one [N, count * C, H, W] tensor,
    /// zero before step 0; only image n's own chain reads or writes row n.
    var auxiliaryStateCount: Int { get }
    /// Advances x by chain step k with the auxiliary state (nil when `auxiliaryStateCount` is 0);
    /// the default ignores it and calls the stateless step.
    func step(_ step: Int, x: Tensor, auxiliary: Tensor?, modelOutput: Tensor,
              classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?)
}

extension DiffusionSampler {
    /// One-step samplers carry nothing.
    public var auxiliaryStateCount: Int { 0 }

    /// The stateless step.
    public func step(_ step: Int, x: Tensor, auxiliary: Tensor?, modelOutput: Tensor,
                     classifierGuidance: ClassifierGuidanceTerm?, noise: Tensor?) {
        self.step(step, x: x, modelOutput: modelOutput, classifierGuidance: classifierGuidance, noise: noise)
    }
}

/// A sampler that walks a respaced schedule from its last kept timestep down to its first,
/// one network evaluation per kept timestep, starting from x_T ~ N(0, I).
public protocol RespacedChainSampler: DiffusionSampler {
    /// The kept timesteps and their respaced betas.
    var schedule: RespacedSchedule { get }
}

extension RespacedChainSampler {
    /// Number of respaced steps.
    public var stepCount: Int { schedule.count }
    /// x_T ~ N(0, I).
    public var initialNoiseScale: Double { 1 }
    /// The original timestep of chain step k.
    public func timestep(at step: Int) -> Int { schedule.timesteps[schedule.count - 1 - step] }
}

/// The elementwise batch loop shared by the samplers: 16 lanes at a time, image by image.
enum BatchLoop {
    typealias Body = (_ x: UnsafeMutablePointer<Float>, _ output: UnsafePointer<Float>,
                      _ varianceOutput: UnsafePointer<Float>?, _ gradient: UnsafePointer<Float>?,
                      _ noise: UnsafePointer<Float>?, _ lanes: Int) -> Void

    /// Calls `body` for every 16-element block of every image; `varianceOutput` is non-nil when the
    /// output has 2C channels (then it points at the matching element of the last C channels).
    @inline(__always)
    static func run(x: Tensor, modelOutput: Tensor, gradient: Tensor?, noise: Tensor?, _ body: Body) {
        ensure(x.shape.count == 4, "sampler state must be [N, C, H, W], got \(x.shape)")
        let n = x.shape[0], c = x.shape[1], plane = x.shape[2] * x.shape[3]
        let perImage = c * plane
        let outChannels = modelOutput.shape.count == 4 ? modelOutput.shape[1] : -1
        ensure(modelOutput.shape == [n, outChannels, x.shape[2], x.shape[3]] && (outChannels == c || outChannels == 2 * c),
                     "model output \(modelOutput.shape) does not fit state \(x.shape)")
        ensure(gradient == nil || gradient!.count == x.count, "gradient \(gradient!.shape) does not fit \(x.shape)")
        ensure(noise == nil || noise!.count == x.count, "noise \(noise!.shape) does not fit \(x.shape)")
        let outPerImage = outChannels * plane
        for image in 0..<n {
            let xBase = x.data + image * perImage
            let oBase = UnsafePointer(modelOutput.data + image * outPerImage)
            let vBase = outChannels == 2 * c ? oBase + perImage : nil
            let gBase = gradient.map { UnsafePointer($0.data + image * perImage) }
            let zBase = noise.map { UnsafePointer($0.data + image * perImage) }
            var j = 0
            while j < perImage {
                let lanes = min(16, perImage - j)
                body(xBase + j, oBase + j, vBase.map { $0 + j }, gBase.map { $0 + j }, zBase.map { $0 + j }, lanes)
                j += 16
            }
        }
    }
}
