/// Settings of NCSN annealed Langevin dynamics (Song & Ermon); the one parameter set of the engine and
/// of job files (`sampler.langevin`). Two sets of defaults, each for one reader: `init()`'s (1 -> 0.01,
/// 100 levels x 5 steps, eps = 2e-5) are what records without a noise range ran with; `jobDefaults`
/// (tuned on the shipped model) is what a new job file gets.
public struct LangevinParameters: Codable, Sendable, Hashable {
    /// Number of noise levels L.
    public var levels: Int
    /// Langevin steps per level.
    public var stepsPerLevel: Int
    /// Base step size eps: alpha_i = eps sigma_i^2 / sigma_L^2.
    public var stepSize: Double
    /// Largest noise level sigma_1 (variance-exploding scale).
    public var sigmaMax: Double
    /// Smallest noise level sigma_L.
    public var sigmaMin: Double
    /// Whether a final denoising step x <- x + sigma_L^2 score (NCSNv2) ends the chain.
    public var finalDenoising: Bool

    /// Creates parameters; defaults: 100 levels from 1.0 to 0.01, 5 steps each, eps = 2e-5, final denoising on
    /// (those spool/examples/README.md documents for job files).
    public init(levels: Int = 100, stepsPerLevel: Int = 5, stepSize: Double = 2e-5,
                sigmaMax: Double = 1.0, sigmaMin: Double = 0.01, finalDenoising: Bool = true) {
        self.levels = levels
        self.stepsPerLevel = stepsPerLevel
        self.stepSize = stepSize
        self.sigmaMax = sigmaMax
        self.sigmaMin = sigmaMin
        self.finalDenoising = finalDenoising
    }

    /// NCSN's levels on the noise scale of data in [-1, 1] (NCSN's data lie in [0, 1], so its sigmas
    /// 1 -> 0.01 are 2 -> 0.02 here) with eps = 8e-5, which keeps NCSN's eps / sigma_L^2 = 0.2; 10 levels of
    /// 100 steps and the final denoising step as in the defaults. Not the defaults themselves: those fix
    /// the bits of every Langevin job recorded so far (regeneration rebuilds a job from its settings).
    public static let dataRangeScaled = LangevinParameters(stepSize: 8e-5, sigmaMax: 2, sigmaMin: 0.02)

    /// What a new job file gets for the keys it leaves out (spool/examples/README.md): sigma_1 = 50, near
    /// the largest distance between two training images (42 over 3,000 Fashion-MNIST images in [-1, 1]:
    /// NCSNv2's first technique), sigma_L = 0.02 (NCSN's 0.01 for data in [0, 1]), 100 levels x 2 steps and
    /// eps = 2e-4 (eps / sigma_L^2 = 0.5), the best of a sweep on the shipped model (BENCHMARKS.md).
    public static let jobDefaults = LangevinParameters(levels: 100, stepsPerLevel: 2, stepSize: 2e-4, sigmaMax: 50, sigmaMin: 0.02)

    enum CodingKeys: String, CodingKey {
        case levels
        case stepsPerLevel = "steps_per_level"
        case stepSize = "step_size"
        case sigmaMax = "sigma_max"
        case sigmaMin = "sigma_min"
        case finalDenoising = "final_denoising"
    }

    /// Decodes; missing keys take the defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LangevinParameters()
        levels = try c.decodeIfPresent(Int.self, forKey: .levels) ?? d.levels
        stepsPerLevel = try c.decodeIfPresent(Int.self, forKey: .stepsPerLevel) ?? d.stepsPerLevel
        stepSize = try c.decodeIfPresent(Double.self, forKey: .stepSize) ?? d.stepSize
        sigmaMax = try c.decodeIfPresent(Double.self, forKey: .sigmaMax) ?? d.sigmaMax
        sigmaMin = try c.decodeIfPresent(Double.self, forKey: .sigmaMin) ?? d.sigmaMin
        finalDenoising = try c.decodeIfPresent(Bool.self, forKey: .finalDenoising) ?? d.finalDenoising
    }
}
