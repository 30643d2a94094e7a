/// The reverse-process algorithm of a job.
public enum SamplerKind: String, Codable, Sendable, Hashable, CaseIterable {
    /// Ancestral sampling with a fixed or learned variance.
    case ddpm
    /// DDIM with stochasticity eta.
    case ddim
    /// Ancestral sampling with the Analytic-DPM variance (needs a Gamma table).
    case analyticDDPM = "analytic_ddpm"
    /// DDIM with the Analytic-DPM variance (needs a Gamma table).
    case analyticDDIM = "analytic_ddim"
    /// NCSN annealed Langevin dynamics on the model's score.
    case langevin
    /// DPM-Solver++(2M) as diffusers' DPMSolverMultistepScheduler runs it (respacing `dpmsolverN` is its spacing).
    case dpmSolverPlusPlus = "dpm_solver++"
    /// SN-DDPM: ancestral steps with the per-pixel SN-DPM covariance (needs the network's SN head).
    case snDDPM = "sn_ddpm"
    /// SN-DDIM: DDIM-type steps with the per-pixel SN-DPM covariance (needs the SN head).
    case snDDIM = "sn_ddim"
    /// NPR-DDPM: ancestral steps with the per-pixel NPR-DPM covariance (needs the network's NPR head).
    case nprDDPM = "npr_ddpm"
    /// NPR-DDIM: DDIM-type steps with the per-pixel NPR-DPM covariance (needs the NPR head).
    case nprDDIM = "npr_ddim"

    /// Predictor-corrector sampling (score SDE): Langevin corrector steps with signal-to-noise ratio `snr`
    /// (per-image norms) and a VP ancestral predictor at each kept timestep.
    case predictorCorrector = "pc"

    /// The covariance head an Extended-Analytic-DPM kind needs; nil for the others.
    public var covarianceHead: CovarianceHeadKind? {
        switch self {
        case .snDDPM, .snDDIM: return .sn
        case .nprDDPM, .nprDDIM: return .npr
        default: return nil
        }
    }

    /// Uses `eta` (the DDIM family).
    public var usesEta: Bool { [.ddim, .analyticDDIM, .snDDIM, .nprDDIM].contains(self) }
    /// Uses a respaced timestep schedule (all but Langevin).
    public var usesRespacing: Bool { self != .langevin }
    /// Takes a variance choice (plain DDPM; the others compute their own).
    public var usesVariance: Bool { self == .ddpm }
}

/// How the samples are steered toward their class.
public enum GuidanceKind: String, Codable, Sendable, Hashable, CaseIterable {
    /// The network's (conditional or unconditional) output as is.
    case none
    /// Classifier guidance with g = scale * grad log p(y | x_t, t) from a noisy classifier.
    case classifier
    /// Classifier-free guidance: eps~ = (1 + w) eps(x, c) - w eps(x, null), w = scale.
    case classifierFree = "classifier_free"
}

/// The label a class-conditional network sees under classifier guidance.
public enum GuidedNetworkClass: String, Codable, Sendable, Hashable, CaseIterable {
    /// The null class: the network is unconditional, the classifier alone steers the class.
    case null
    /// The requested class, as guided-diffusion's ADM-G does with a conditional model: the
    /// network is conditioned and the classifier's gradient steers further.
    case requested
}

/// Everything that determines a job's samples, with defaults; Codable as the provenance record.
///
/// Together with the model weights, the image indices and the classes, this value fixes every
/// output bit: the noise of image i at chain step k is a pure function of (seed, i, k, element).
public struct SamplingConfiguration: Codable, Sendable, Hashable {
    /// The model's diffusion (model.json `diffusion`); default cosine, T = 1000, eps, learned range.
    public var diffusion: DiffusionSettings = DiffusionSettings()
    /// The algorithm; default ddpm.
    public var sampler: SamplerKind = .ddpm
    /// The visited timesteps; default all T.
    public var respacing: TimestepRespacing = .full
    /// The variance of the ddpm sampler; nil (default) takes `diffusion.variance`. Only for ddpm.
    public var ddpmVariance: VarianceType? = nil
    /// DDIM stochasticity in [0, 1]; default 0. Only for ddim, analytic_ddim, sn_ddim and npr_ddim.
    public var eta: Double = 0
    /// Whether x0 estimates (and the final sample) are clipped to [-1, 1]; default true.
    public var clipDenoised: Bool = true
    /// The guidance; default none.
    public var guidance: GuidanceKind = .none
    /// Classifier scale s or classifier-free weight w; default 1. Ignored without guidance.
    public var guidanceScale: Double = 1
    /// The label meaning "no class" (model.json `null_class`); required for classifier-free guidance.
    /// Under classifier guidance a network with a null class is fed that label (the classifier steers).
    public var nullClass: Int? = nil
    /// What a conditional network sees under classifier guidance; default its null class. Only for
    /// classifier guidance; encoded only when `requested` (earlier records keep their bytes).
    public var guidedNetworkClass: GuidedNetworkClass = .null
    /// Langevin settings; only for langevin (other samplers reject non-default values).
    public var langevin: LangevinParameters = LangevinParameters()
    /// c in the Analytic-DPM last-step bound (c (2/255) sqrt(pi/2))^2; nil (default) means 2 for
    /// analytic_ddpm (sn_ddpm, npr_ddpm) on a linear schedule, 1 otherwise. Only for the analytic,
    /// SN and NPR samplers.
    public var analyticLastStepClipFactor: Double? = nil
    /// The job seed of the noise; default 0.
    public var seed: UInt64 = 0
    /// The pc corrector's signal-to-noise ratio; nil means 0.16 (score SDE's default) for pc. Only for pc.
    /// Encoded only when set (pc records carry the value used), so earlier records keep their bytes.
    public var snr: Double? = nil
    /// Corrector steps per predictor step of pc; nil means 1. Only for pc; encoded only when set.
    public var correctorSteps: Int? = nil

    /// A configuration with every default.
    public init() {}

    enum CodingKeys: String, CodingKey {
        case diffusion, sampler, respacing, eta, guidance, langevin, seed
        case ddpmVariance = "ddpm_variance"
        case clipDenoised = "clip_denoised"
        case guidanceScale = "guidance_scale"
        case nullClass = "null_class"
        case analyticLastStepClipFactor = "analytic_last_step_clip_factor"
        case snr
        case correctorSteps = "corrector_steps"
        case guidedNetworkClass = "guided_network_class"
    }

    /// Decodes a record; missing keys take the defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        diffusion = try c.decodeIfPresent(DiffusionSettings.self, forKey: .diffusion) ?? diffusion
        sampler = try c.decodeIfPresent(SamplerKind.self, forKey: .sampler) ?? sampler
        respacing = try c.decodeIfPresent(TimestepRespacing.self, forKey: .respacing) ?? respacing
        ddpmVariance = try c.decodeIfPresent(VarianceType.self, forKey: .ddpmVariance)
        eta = try c.decodeIfPresent(Double.self, forKey: .eta) ?? eta
        clipDenoised = try c.decodeIfPresent(Bool.self, forKey: .clipDenoised) ?? clipDenoised
        guidance = try c.decodeIfPresent(GuidanceKind.self, forKey: .guidance) ?? guidance
        guidanceScale = try c.decodeIfPresent(Double.self, forKey: .guidanceScale) ?? guidanceScale
        nullClass = try c.decodeIfPresent(Int.self, forKey: .nullClass)
        langevin = try c.decodeIfPresent(LangevinParameters.self, forKey: .langevin) ?? langevin
        analyticLastStepClipFactor = try c.decodeIfPresent(Double.self, forKey: .analyticLastStepClipFactor)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? seed
        snr = try c.decodeIfPresent(Double.self, forKey: .snr)
        correctorSteps = try c.decodeIfPresent(Int.self, forKey: .correctorSteps)
        guidedNetworkClass = try c.decodeIfPresent(GuidedNetworkClass.self, forKey: .guidedNetworkClass) ?? .null
    }

    /// Encodes every field, nil optionals as null, so the record is complete.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(diffusion, forKey: .diffusion)
        try c.encode(sampler, forKey: .sampler)
        try c.encode(respacing, forKey: .respacing)
        try c.encode(ddpmVariance, forKey: .ddpmVariance)
        try c.encode(eta, forKey: .eta)
        try c.encode(clipDenoised, forKey: .clipDenoised)
        try c.encode(guidance, forKey: .guidance)
        try c.encode(guidanceScale, forKey: .guidanceScale)
        try c.encode(nullClass, forKey: .nullClass)
        try c.encode(langevin, forKey: .langevin)
        try c.encode(analyticLastStepClipFactor, forKey: .analyticLastStepClipFactor)
        try c.encode(seed, forKey: .seed)
        try c.encodeIfPresent(snr, forKey: .snr)
        try c.encodeIfPresent(correctorSteps, forKey: .correctorSteps)
        if guidedNetworkClass != .null { try c.encode(guidedNetworkClass, forKey: .guidedNetworkClass) }
    }
}
