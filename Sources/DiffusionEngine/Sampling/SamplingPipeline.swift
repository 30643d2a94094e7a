/// The size of one image: channels, height, width.
public struct ImageShape: Codable, Sendable, Hashable {
    /// Channels C.
    public var channels: Int
    /// Height H.
    public var height: Int
    /// Width W.
    public var width: Int

    /// Creates a shape.
    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
    }

    /// C * H * W.
    public var elementCount: Int { channels * height * width }

    /// The NCHW shape of a batch of n images.
    public func batch(_ n: Int) -> [Int] { [n, channels, height, width] }
}

/// Where a running job stands, reported after every step.
public struct SamplingProgress: Sendable, Hashable {
    /// Steps finished so far, counted from the start of the chain.
    public let completedSteps: Int
    /// Steps in the whole chain.
    public let totalSteps: Int
    /// The original timestep of the step just finished.
    public let timestep: Int
}

/// Runs a whole reverse chain for a batch of images: noise, network, guidance, sampler steps.
///
/// Usage: `let pipeline = try SamplingPipeline(configuration: c, predictor: net, imageShape: s)`,
/// then `try pipeline.generate(imageIndices: [0, 1, 2], classes: [3, 3, 7])` returns x [N, C, H, W]
/// (in [-1, 1] when `clipDenoised`; `pixelBytes()` converts it). For checkpointing, `initialState` and
/// `denoise(_:imageIndices:classes:steps:)` run any range of chain steps on a state in place; the
/// images come out bit-identical whatever the batch split, batch order or resume point.
public final class SamplingPipeline {
    /// The configuration with every default resolved (the provenance record).
    public let configuration: SamplingConfiguration
    /// The sampler built from it.
    public let sampler: any DiffusionSampler
    /// The image size.
    public let imageShape: ImageShape
    let predictor: any NoisePredictor
    let classifier: (any ClassifierGradient)?
    let randomSource: any RandomSource

    /// Validates `configuration` against the network, classifier and Gamma table and builds the sampler.
    ///
    /// Throws `SamplingError.invalidSetting` naming the offending setting. `randomSource` defaults to
    /// `PhiloxNormalSource(seed: configuration.seed)`.
    public init(configuration: SamplingConfiguration, predictor: any NoisePredictor,
                classifier: (any ClassifierGradient)? = nil, gammaTable: [Double]? = nil,
                imageShape: ImageShape, randomSource: (any RandomSource)? = nil) throws {
        var config = configuration
        func invalid(_ name: String, _ reason: String) -> SamplingError { .invalidSetting(name: name, reason: reason) }
        let d = config.diffusion
        guard d.steps >= 1 else { throw invalid("diffusion.steps", "T must be at least 1, got \(d.steps)") }
        guard imageShape.channels >= 1, imageShape.height >= 1, imageShape.width >= 1 else {
            throw invalid("image_shape", "every dimension must be positive")
        }
        let c = imageShape.channels
        // A covariance head's C channels end the output; the rest is eps (x0, v) and any variance.
        let outC = predictor.outputChannels - (predictor.covarianceHead == nil ? 0 : c)
        guard outC == c || outC == 2 * c else {
            throw SamplingError.shapeMismatch("the network outputs \(outC) channels; images have \(c) (expected \(c) or \(2 * c))")
        }
        if d.variance == .learnedRange && outC != 2 * c {
            throw invalid("diffusion.variance", "learned_range needs \(2 * c) output channels; the network has \(outC)")
        }
        let kind = config.sampler
        let isAnalytic = kind == .analyticDDPM || kind == .analyticDDIM || kind.covarianceHead != nil
        if let needed = kind.covarianceHead {
            guard predictor.covarianceHead == needed else {
                throw invalid("sampler", "\(kind.rawValue) needs the model's \(needed.rawValue.uppercased())-DPM head (\(needed.fileName))"
                              + (predictor.covarianceHead.map { "; the network carries the \($0.rawValue) head" } ?? ""))
            }
            if needed == .sn && config.guidance == .classifierFree {
                throw invalid("guidance", "classifier_free does not combine with \(kind.rawValue): the SN covariance h - eps^2 needs the eps the head was trained with, not a guided one (npr samplers and classifier guidance do combine)")
            }
        } else if let carried = predictor.covarianceHead {
            throw invalid("sampler", "the network carries the \(carried.rawValue) covariance head, which \(kind.rawValue) does not use; build it without the head")
        }
        if kind != .ddpm, let v = config.ddpmVariance {
            throw invalid("ddpm_variance", "'\(v.rawValue)' applies to the ddpm sampler only, not \(kind.rawValue)")
        }
        if !kind.usesEta && config.eta != 0 {
            throw invalid("eta", "applies to ddim, analytic_ddim, sn_ddim and npr_ddim only, not \(kind.rawValue)")
        }
        guard config.eta.isFinite, (0...1).contains(config.eta) else { throw invalid("eta", "must lie in [0, 1], got \(config.eta)") }
        if kind != .langevin && config.langevin != LangevinParameters() {
            throw invalid("langevin", "Langevin settings apply to the langevin sampler only, not \(kind.rawValue)")
        }
        if !isAnalytic, config.analyticLastStepClipFactor != nil {
            throw invalid("analytic_last_step_clip_factor", "applies to the analytic, sn and npr samplers only")
        }
        if kind != .predictorCorrector && (config.snr != nil || config.correctorSteps != nil) {
            throw invalid(config.snr != nil ? "snr" : "corrector_steps", "applies to the pc sampler only, not \(kind.rawValue)")
        }
        switch config.guidance {
        case .none: break
        case .classifier:
            guard classifier != nil else { throw invalid("guidance", "classifier guidance needs a classifier") }
        case .classifierFree:
            guard config.nullClass != nil else { throw invalid("null_class", "classifier-free guidance needs the null class label") }
        }
        if config.guidance != .classifier && config.guidedNetworkClass != .null {
            throw invalid("guided_network_class", "applies to classifier guidance only")
        }
        if config.guidance != .none && !config.guidanceScale.isFinite {
            throw invalid("guidance_scale", "must be finite, got \(config.guidanceScale)")
        }

        let base = d.noiseSchedule
        let built: any DiffusionSampler
        switch kind {
        case .ddpm:
            let variance = config.ddpmVariance ?? d.variance
            if variance == .learnedRange && outC != 2 * c {
                throw invalid("ddpm_variance", "learned_range needs \(2 * c) output channels; the network has \(outC)")
            }
            config.ddpmVariance = variance
            built = DDPMSampler(schedule: try RespacedSchedule(base: base, respacing: config.respacing),
                                variance: variance, prediction: d.prediction, clipDenoised: config.clipDenoised)
        case .ddim:
            built = DDIMSampler(schedule: try RespacedSchedule(base: base, respacing: config.respacing),
                                eta: config.eta, prediction: d.prediction, clipDenoised: config.clipDenoised)
        case .analyticDDPM, .analyticDDIM:
            guard let gamma = gammaTable else {
                throw invalid("sampler", "\(kind.rawValue) needs the model's Gamma table (gamma.safetensors)")
            }
            guard gamma.count == d.steps, gamma.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw invalid("sampler", "the Gamma table must hold \(d.steps) finite non-negative values, got \(gamma.count)")
            }
            let factor = config.analyticLastStepClipFactor ?? (kind == .analyticDDPM && d.schedule == .linear ? 2 : 1)
            guard factor > 0, factor.isFinite else { throw invalid("analytic_last_step_clip_factor", "must be positive, got \(factor)") }
            config.analyticLastStepClipFactor = factor
            let schedule = try RespacedSchedule(base: base, respacing: config.respacing)
            built = kind == .analyticDDPM
                ? AnalyticDDPMSampler(schedule: schedule, gamma: gamma, prediction: d.prediction,
                                      clipDenoised: config.clipDenoised, lastStepClipFactor: factor)
                : AnalyticDDIMSampler(schedule: schedule, gamma: gamma, eta: config.eta, prediction: d.prediction,
                                      clipDenoised: config.clipDenoised, lastStepClipFactor: factor)
        case .langevin:
            guard config.respacing == .full else {
                throw invalid("respacing", "does not apply to langevin (its levels choose the timesteps)")
            }
            let p = config.langevin
            guard p.levels >= 1 else { throw invalid("langevin.levels", "must be at least 1, got \(p.levels)") }
            guard p.stepsPerLevel >= 1 else { throw invalid("langevin.steps_per_level", "must be at least 1, got \(p.stepsPerLevel)") }
            guard p.stepSize > 0, p.stepSize.isFinite else { throw invalid("langevin.step_size", "must be positive, got \(p.stepSize)") }
            guard p.sigmaMin > 0, p.sigmaMin.isFinite else { throw invalid("langevin.sigma_min", "must be positive, got \(p.sigmaMin)") }
            guard p.sigmaMax >= p.sigmaMin, p.sigmaMax.isFinite else {
                throw invalid("langevin.sigma_max", "must be at least sigma_min, got \(p.sigmaMax)")
            }
            built = LangevinSampler(schedule: base, parameters: p, prediction: d.prediction, clipDenoised: config.clipDenoised)
        case .snDDPM, .snDDIM, .nprDDPM, .nprDDIM:
            let ddpmType = kind == .snDDPM || kind == .nprDDPM
            let factor = config.analyticLastStepClipFactor ?? (ddpmType && d.schedule == .linear ? 2 : 1)
            guard factor > 0, factor.isFinite else { throw invalid("analytic_last_step_clip_factor", "must be positive, got \(factor)") }
            config.analyticLastStepClipFactor = factor
            built = CovarianceHeadSampler(schedule: try RespacedSchedule(base: base, respacing: config.respacing),
                                          head: kind.covarianceHead!, type: ddpmType ? .ddpm : .ddim, eta: config.eta,
                                          prediction: d.prediction, clipDenoised: config.clipDenoised, lastStepClipFactor: factor)
        case .predictorCorrector:
            let snr = config.snr ?? 0.16, correctorSteps = config.correctorSteps ?? 1
            guard snr >= 0, snr.isFinite else { throw invalid("snr", "must be finite and non-negative, got \(snr)") }
            guard correctorSteps >= 0 else { throw invalid("corrector_steps", "must be non-negative, got \(correctorSteps)") }
            config.snr = snr
            config.correctorSteps = correctorSteps
            built = PredictorCorrectorSampler(schedule: try RespacedSchedule(base: base, respacing: config.respacing),
                                              snr: snr, correctorSteps: correctorSteps, prediction: d.prediction)
        case .dpmSolverPlusPlus:
            built = DPMSolverPlusPlusSampler(schedule: try RespacedSchedule(base: base, respacing: config.respacing),
                                             prediction: d.prediction, clipDenoised: config.clipDenoised)
        }
        self.configuration = config
        self.sampler = built
        self.imageShape = imageShape
        self.predictor = predictor
        self.classifier = classifier
        self.randomSource = randomSource ?? PhiloxNormalSource(seed: config.seed)
    }

    /// Number of steps (network evaluations per image, twice that with classifier-free guidance) in a job.
    public var stepCount: Int { sampler.stepCount }

    /// The initial state [N, C, H, W] of the images: initialNoiseScale * z with z from draw 0.
    public func initialState(imageIndices: [Int]) -> Tensor {
        let x = Tensor(shape: imageShape.batch(imageIndices.count))
        let perImage = imageShape.elementCount
        let scale = Float(sampler.initialNoiseScale)
        for (n, image) in imageIndices.enumerated() {
            ensure(image >= 0, "image indices must be non-negative")
            let slice = UnsafeMutableBufferPointer(start: x.data + n * perImage, count: perImage)
            randomSource.fillStandardNormal(slice, image: image, draw: 0)
            if scale != 1 { for j in slice.indices { slice[j] *= scale } }
        }
        return x
    }

    /// The auxiliary state of a multistep sampler before step 0 (zeros, [N, count * C, H, W]); nil when
    /// the sampler carries none. Checkpoint it with x to resume such a chain mid-way.
    public func initialAuxiliaryState(imageCount n: Int) -> Tensor? {
        let count = sampler.auxiliaryStateCount
        guard count > 0 else { return nil }
        return Tensor(shape: [n, count * imageShape.channels, imageShape.height, imageShape.width])
    }

    /// Generates the images from scratch: the final x [N, C, H, W].
    public func generate(imageIndices: [Int], classes: [Int]?,
                         progress: ((SamplingProgress) -> Void)? = nil, isCancelled: () -> Bool = { false }) throws -> Tensor {
        let x = initialState(imageIndices: imageIndices)
        try denoise(x, imageIndices: imageIndices, classes: classes, progress: progress, isCancelled: isCancelled)
        return x
    }
}
