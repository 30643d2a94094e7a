import DiffusionEngine
import Foundation

/// How classes steer generation.
public enum GenerationMode: String, Codable, Sendable, CaseIterable {
    /// The class label is fed to a class-conditional network.
    case classConditional = "class-conditional"
    /// A noisy classifier's gradient guides an (un)conditional network (Dhariwal & Nichol).
    case classifierGuided = "classifier-guided"
    /// Conditional and unconditional predictions are mixed (Ho & Salimans).
    case classifierFree = "classifier-free"
    /// No class: the null label of a conditional network, or an unconditional one.
    case unconditional

    public var usesClasses: Bool { self != .unconditional }
    public var usesGuidanceScale: Bool { self == .classifierGuided || self == .classifierFree }
}

/// Sampling algorithms.
public enum SamplerKind: String, Codable, Sendable, CaseIterable {
    case ddpm
    case ddim
    case analyticDDPM = "analytic-ddpm"
    case analyticDDIM = "analytic-ddim"
    case langevin

    /// Uses `eta` (the DDIM family).
    public var usesEta: Bool { self == .ddim || self == .analyticDDIM }
    /// Uses a respaced timestep schedule (all but Langevin).
    public var usesRespacing: Bool { self != .langevin }
    /// Takes a variance choice (plain DDPM; the analytic samplers compute their own).
    public var usesVariance: Bool { self == .ddpm }
}

/// The reverse-process variance.
public enum VarianceKind: String, Codable, Sendable, CaseIterable {
    case fixedSmall = "fixed_small"
    case fixedLarge = "fixed_large"
    case learnedRange = "learned_range"
}

/// A class, resolved to both index and name.
public struct ClassRef: Codable, Sendable, Equatable, Hashable {
    public var index: Int
    public var name: String
    public init(index: Int, name: String) {
        self.index = index
        self.name = name
    }
}

/// Annealed Langevin dynamics settings (Song & Ermon).
public struct LangevinSpec: Codable, Sendable, Equatable {
    /// Noise levels visited, from the largest down.
    public var levels: Int
    public var stepsPerLevel: Int
    /// The base step size epsilon (scaled per level by sigma_i^2 / sigma_L^2).
    public var stepSize: Double
    /// Finish with one denoising step (Tweedie) at the smallest level.
    public var finalDenoise: Bool

    public init(levels: Int = 100, stepsPerLevel: Int = 5, stepSize: Double = 2e-5, finalDenoise: Bool = true) {
        self.levels = levels
        self.stepsPerLevel = stepsPerLevel
        self.stepSize = stepSize
        self.finalDenoise = finalDenoise
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case levels, stepsPerLevel = "steps_per_level", stepSize = "step_size", finalDenoise = "final_denoise"
    }
}

/// Every sampler setting, defaults written out; settings that do not apply to
/// the kind are nil.
public struct SamplerSpec: Codable, Sendable, Equatable {
    public var kind: SamplerKind
    /// Network evaluations of the respaced process (nil for Langevin).
    public var steps: Int?
    /// guided-diffusion's `timestep_respacing`: "ddim<N>" or section counts "10,15,20".
    public var respacing: String?
    public var eta: Double?
    public var variance: VarianceKind?
    public var guidanceScale: Double?
    /// The noisy classifier bundle (classifier-guided only).
    public var classifier: String?
    public var langevin: LangevinSpec?
    /// Clip the x0 prediction to [-1, 1] at every step.
    public var clip: Bool

    public init(kind: SamplerKind, steps: Int? = nil, respacing: String? = nil, eta: Double? = nil,
                variance: VarianceKind? = nil, guidanceScale: Double? = nil, classifier: String? = nil,
                langevin: LangevinSpec? = nil, clip: Bool = true) {
        self.kind = kind
        self.steps = steps
        self.respacing = respacing
        self.eta = eta
        self.variance = variance
        self.guidanceScale = guidanceScale
        self.classifier = classifier
        self.langevin = langevin
        self.clip = clip
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case kind, steps, respacing, eta, variance, guidanceScale = "guidance_scale", classifier, langevin, clip
    }

    /// The timesteps kept from the original process of length `T`: guided-diffusion's
    /// `space_timesteps` ("ddimN", section counts) and diffusers' spacings ("leadingN",
    /// "trailingN", "linspaceN"), as the engine computes them.
    public static func respacedTimesteps(_ respacing: String, diffusionSteps T: Int) throws(RespacingError) -> [Int] {
        do {
            let kept = try TimestepRespacing(parsing: respacing).timesteps(trainingSteps: T)
            guard !kept.isEmpty else { throw RespacingError("keeps no timesteps") }
            return kept
        } catch let error as RespacingError {
            throw error
        } catch let SamplingError.invalidSetting(_, reason) {
            throw RespacingError(reason)
        } catch {
            throw RespacingError("\(error)")
        }
    }
}

public struct RespacingError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ d: String) { description = d }
}

/// Output file settings.
public struct OutputSpec: Codable, Sendable, Equatable {
    public var format: String
    /// JPEG quality (1-100); nil for PNG.
    public var quality: Int?
    /// Nearest-neighbour enlargement of the viewing copies and contact sheet (1 = none).
    public var upscale: Int

    public init(format: String = "png", quality: Int? = nil, upscale: Int = 1) {
        self.format = format
        self.quality = quality
        self.upscale = upscale
    }
}

/// A validated job with every default spelled out. It is stored (as JSON)
/// with the job and copied into every image's record, so it is the job's
/// reproducible description.
public struct JobSpec: Codable, Sendable, Equatable {
    public static let schemaVersion = "diffusiond-job/1"

    public var schema: String = JobSpec.schemaVersion
    public var name: String
    public var model: String
    public var mode: GenerationMode
    /// The classes in the order given (empty for unconditional).
    public var classes: [ClassRef]
    /// Set when images were requested per class; images 0..<n are the first class, and so on.
    public var imagesPerClass: Int?
    /// Number of images; with a total and several classes, image i has class i mod (class count).
    public var totalImages: Int
    public var sampler: SamplerSpec
    public var seed: UInt64
    /// True when the file gave no seed and the daemon drew one.
    public var seedDrawn: Bool
    public var output: OutputSpec
    public var priority: Int
    /// Image geometry from the model.
    public var height: Int
    public var width: Int
    public var channels: Int

    public init(name: String, model: String, mode: GenerationMode, classes: [ClassRef], imagesPerClass: Int?,
                totalImages: Int, sampler: SamplerSpec, seed: UInt64, seedDrawn: Bool, output: OutputSpec,
                priority: Int, height: Int, width: Int, channels: Int) {
        self.name = name
        self.model = model
        self.mode = mode
        self.classes = classes
        self.imagesPerClass = imagesPerClass
        self.totalImages = totalImages
        self.sampler = sampler
        self.seed = seed
        self.seedDrawn = seedDrawn
        self.output = output
        self.priority = priority
        self.height = height
        self.width = width
        self.channels = channels
    }

    enum CodingKeys: String, CodingKey {
        case schema, name, model, mode, classes, imagesPerClass = "images_per_class", totalImages = "total_images"
        case sampler, seed, seedDrawn = "seed_drawn", output, priority, height, width, channels
    }

    /// The class of image `index` (nil when unconditional).
    public func classFor(index: Int) -> ClassRef? {
        guard mode.usesClasses, !classes.isEmpty else { return nil }
        if let per = imagesPerClass { return classes[min(index / per, classes.count - 1)] }
        return classes[index % classes.count]
    }

    /// How each image's noise follows from the job seed (recorded in every image).
    public static let seedDerivation =
        "image i draws its noise from the stream keyed by (job seed, i), independent of batch size and order"

    /// The JSON text of the spec (sorted keys).
    public func jsonString(pretty: Bool = false) -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? enc.encode(self)) ?? Data(), as: UTF8.self)
    }

    public static func fromJSON(_ text: String) throws -> JobSpec {
        try JSONDecoder().decode(JobSpec.self, from: Data(text.utf8))
    }
}
