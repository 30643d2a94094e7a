/// What the network's first output channels predict (model.json `diffusion.prediction`).
public enum PredictionType: String, Codable, Sendable, Hashable, CaseIterable {
    /// The noise eps: x0 = (x - sqrt(1 - abar) eps) / sqrt(abar).
    case epsilon = "eps"
    /// The clean sample x0 itself.
    case sample = "x0"
    /// The velocity v = sqrt(abar) eps - sqrt(1 - abar) x0: x0 = sqrt(abar) x - sqrt(1 - abar) v.
    case velocity = "v"
}

/// The variance of the reverse (ancestral) step (model.json `diffusion.variance`).
public enum VarianceType: String, Codable, Sendable, Hashable, CaseIterable {
    /// The posterior variance betatilde_t (log clipped at t = 0).
    case fixedSmall = "fixed_small"
    /// beta_t, with betatilde_1 at t = 0.
    case fixedLarge = "fixed_large"
    /// Interpolated in log space between betatilde_t and beta_t by the network's extra output channels.
    case learnedRange = "learned_range"
}

/// How the network receives the timestep (model.json `diffusion.timestep_input`).
public enum TimestepInput: String, Codable, Sendable, Hashable, CaseIterable {
    /// The original integer index t in 0..<T, also after respacing.
    case index
}

/// The diffusion a model was trained with: the `diffusion` object of a bundle's model.json.
public struct DiffusionSettings: Codable, Sendable, Hashable {
    /// The beta schedule family.
    public var schedule: BetaSchedule
    /// T, the number of training timesteps.
    public var steps: Int
    /// What the network predicts.
    public var prediction: PredictionType
    /// The variance the model was trained for (learned range means the network outputs 2C channels).
    public var variance: VarianceType
    /// How the network receives the timestep.
    public var timestepInput: TimestepInput

    /// Creates settings; the defaults are those of the fashion-mnist bundle.
    public init(schedule: BetaSchedule = .cosine, steps: Int = 1000, prediction: PredictionType = .epsilon,
                variance: VarianceType = .learnedRange, timestepInput: TimestepInput = .index) {
        self.schedule = schedule
        self.steps = steps
        self.prediction = prediction
        self.variance = variance
        self.timestepInput = timestepInput
    }

    enum CodingKeys: String, CodingKey {
        case schedule, steps, prediction, variance
        case timestepInput = "timestep_input"
    }

    /// Decodes model.json's object; missing keys take the defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = DiffusionSettings()
        schedule = try c.decodeIfPresent(BetaSchedule.self, forKey: .schedule) ?? d.schedule
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        prediction = try c.decodeIfPresent(PredictionType.self, forKey: .prediction) ?? d.prediction
        variance = try c.decodeIfPresent(VarianceType.self, forKey: .variance) ?? d.variance
        timestepInput = try c.decodeIfPresent(TimestepInput.self, forKey: .timestepInput) ?? d.timestepInput
    }

    /// The full T-step schedule.
    public var noiseSchedule: NoiseSchedule { NoiseSchedule(schedule, steps: steps) }
}
