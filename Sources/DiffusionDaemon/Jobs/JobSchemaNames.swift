import DiffusionEngine

/// The job schema's spellings of the engine's vocabulary (spool/examples/README.md), in one place.
/// Job files and the stored job spec say `analytic-ddpm`; the engine's own record says `analytic_ddpm`.
extension SamplerKind {
    /// The name of the kind in job files (`sampler.kind`).
    public var jobName: String {
        switch self {
        case .ddpm: "ddpm"
        case .ddim: "ddim"
        case .analyticDDPM: "analytic-ddpm"
        case .analyticDDIM: "analytic-ddim"
        case .langevin: "langevin"
        case .dpmSolverPlusPlus: "dpm-solver++"
        case .snDDPM: "sn-ddpm"
        case .snDDIM: "sn-ddim"
        case .nprDDPM: "npr-ddpm"
        case .nprDDIM: "npr-ddim"
        case .predictorCorrector: "pc"
        }
    }

    /// The kind a job file names, or nil.
    public init?(jobName: String) {
        guard let k = SamplerKind.allCases.first(where: { $0.jobName == jobName }) else { return nil }
        self = k
    }

    /// Every job-file name, in the engine's order.
    public static var jobNames: [String] { allCases.map(\.jobName) }
}

extension GuidedNetworkClass {
    /// The name in job files (`sampler.network_label`): `null-class` or `requested`.
    public var jobName: String {
        switch self {
        case .null: "null-class"
        case .requested: "requested"
        }
    }

    /// The value a job file names, or nil.
    public init?(jobName: String) {
        guard let v = GuidedNetworkClass.allCases.first(where: { $0.jobName == jobName }) else { return nil }
        self = v
    }

    /// Every job-file name.
    public static var jobNames: [String] { allCases.map(\.jobName) }
}

/// `sampler.langevin` of a job file and of the stored job spec: the engine's parameters under the
/// schema's keys (`final_denoise`). A stored spec from before `sigma_max`/`sigma_min` were recorded
/// decodes to the range it ran with (the engine's legacy 1 -> 0.01), so its images regenerate bit for bit.
struct JobLangevin: Codable {
    var parameters: LangevinParameters

    init(_ parameters: LangevinParameters) { self.parameters = parameters }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case levels, stepsPerLevel = "steps_per_level", stepSize = "step_size", finalDenoise = "final_denoise"
        case sigmaMax = "sigma_max", sigmaMin = "sigma_min"
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let legacy = LangevinParameters()
        parameters = LangevinParameters(levels: try c.decode(Int.self, forKey: .levels),
                                        stepsPerLevel: try c.decode(Int.self, forKey: .stepsPerLevel),
                                        stepSize: try c.decode(Double.self, forKey: .stepSize),
                                        sigmaMax: try c.decodeIfPresent(Double.self, forKey: .sigmaMax) ?? legacy.sigmaMax,
                                        sigmaMin: try c.decodeIfPresent(Double.self, forKey: .sigmaMin) ?? legacy.sigmaMin,
                                        finalDenoising: try c.decode(Bool.self, forKey: .finalDenoise))
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(parameters.levels, forKey: .levels)
        try c.encode(parameters.stepsPerLevel, forKey: .stepsPerLevel)
        try c.encode(parameters.stepSize, forKey: .stepSize)
        try c.encode(parameters.sigmaMax, forKey: .sigmaMax)
        try c.encode(parameters.sigmaMin, forKey: .sigmaMin)
        try c.encode(parameters.finalDenoising, forKey: .finalDenoise)
    }
}
