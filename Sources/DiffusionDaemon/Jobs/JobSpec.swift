import DiffusionEngine
import Foundation
import ImageCodecs

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

/// A class, resolved to both index and name.
public struct ClassRef: Codable, Sendable, Equatable, Hashable {
    public var index: Int
    public var name: String
    public init(index: Int, name: String) {
        self.index = index
        self.name = name
    }
}

/// Every sampler setting, defaults written out; settings that do not apply to
/// the kind are nil. The vocabulary is the engine's (`SamplerKind`, `VarianceType`,
/// `LangevinParameters`); the job schema's spellings of it are in JobSchemaNames.swift.
public struct SamplerSpec: Codable, Sendable, Equatable {
    public var kind: SamplerKind
    /// Network evaluations of the respaced process (nil for Langevin).
    public var steps: Int?
    /// guided-diffusion's `timestep_respacing`: "ddim<N>" or section counts "10,15,20".
    public var respacing: String?
    public var eta: Double?
    public var variance: VarianceType?
    public var guidanceScale: Double?
    /// The noisy classifier bundle (classifier-guided only).
    public var classifier: String?
    /// Langevin settings (langevin only); the job schema exposes levels, steps_per_level, step_size
    /// and final_denoise, the noise range is the engine's default.
    public var langevin: LangevinParameters?
    /// Clip the x0 prediction to [-1, 1] at every step.
    public var clip: Bool
    /// What a conditional network sees under classifier guidance (`network_label`); nil otherwise.
    public var networkLabel: GuidedNetworkClass?
    /// The pc corrector's signal-to-noise ratio and its Langevin steps per predictor step (pc only).
    public var snr: Double?
    public var correctorSteps: Int?

    public init(kind: SamplerKind, steps: Int? = nil, respacing: String? = nil, eta: Double? = nil,
                variance: VarianceType? = nil, guidanceScale: Double? = nil, classifier: String? = nil,
                langevin: LangevinParameters? = nil, clip: Bool = true) {
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
        case networkLabel = "network_label"
        case snr, correctorSteps = "corrector_steps"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = try c.decode(String.self, forKey: .kind)
        guard let kind = SamplerKind(jobName: name) else {
            throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "unknown sampler kind \(name)")
        }
        self.kind = kind
        steps = try c.decodeIfPresent(Int.self, forKey: .steps)
        respacing = try c.decodeIfPresent(String.self, forKey: .respacing)
        eta = try c.decodeIfPresent(Double.self, forKey: .eta)
        variance = try c.decodeIfPresent(VarianceType.self, forKey: .variance)
        guidanceScale = try c.decodeIfPresent(Double.self, forKey: .guidanceScale)
        classifier = try c.decodeIfPresent(String.self, forKey: .classifier)
        langevin = try c.decodeIfPresent(JobLangevin.self, forKey: .langevin)?.parameters
        clip = try c.decode(Bool.self, forKey: .clip)
        if let label = try c.decodeIfPresent(String.self, forKey: .networkLabel) {
            guard let value = GuidedNetworkClass(jobName: label) else {
                throw DecodingError.dataCorruptedError(forKey: .networkLabel, in: c, debugDescription: "unknown network_label \(label)")
            }
            networkLabel = value
        }
        snr = try c.decodeIfPresent(Double.self, forKey: .snr)
        correctorSteps = try c.decodeIfPresent(Int.self, forKey: .correctorSteps)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind.jobName, forKey: .kind)
        try c.encodeIfPresent(steps, forKey: .steps)
        try c.encodeIfPresent(respacing, forKey: .respacing)
        try c.encodeIfPresent(eta, forKey: .eta)
        try c.encodeIfPresent(variance, forKey: .variance)
        try c.encodeIfPresent(guidanceScale, forKey: .guidanceScale)
        try c.encodeIfPresent(classifier, forKey: .classifier)
        try c.encodeIfPresent(langevin.map(JobLangevin.init), forKey: .langevin)
        try c.encode(clip, forKey: .clip)
        try c.encodeIfPresent(networkLabel?.jobName, forKey: .networkLabel)
        try c.encodeIfPresent(snr, forKey: .snr)
        try c.encodeIfPresent(correctorSteps, forKey: .correctorSteps)
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
    public var format: ImageFormat
    /// JPEG quality (1-100); nil for PNG.
    public var quality: Int?
    /// Nearest-neighbour enlargement of the viewing copies and contact sheet (1 = none).
    public var upscale: Int

    public init(format: ImageFormat = .png, quality: Int? = nil, upscale: Int = 1) {
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
    /// The format the network's convolutions compute in (fp32 for specs stored before it existed).
    public var precision: ComputePrecision

    public init(name: String, model: String, mode: GenerationMode, classes: [ClassRef], imagesPerClass: Int?,
                totalImages: Int, sampler: SamplerSpec, seed: UInt64, seedDrawn: Bool, output: OutputSpec,
                priority: Int, height: Int, width: Int, channels: Int, precision: ComputePrecision = .fp32) {
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
        self.precision = precision
    }

    enum CodingKeys: String, CodingKey {
        case schema, name, model, mode, classes, imagesPerClass = "images_per_class", totalImages = "total_images"
        case sampler, seed, seedDrawn = "seed_drawn", output, priority, height, width, channels, precision
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        schema = try c.decode(String.self, forKey: .schema)
        name = try c.decode(String.self, forKey: .name)
        model = try c.decode(String.self, forKey: .model)
        mode = try c.decode(GenerationMode.self, forKey: .mode)
        classes = try c.decode([ClassRef].self, forKey: .classes)
        imagesPerClass = try c.decodeIfPresent(Int.self, forKey: .imagesPerClass)
        totalImages = try c.decode(Int.self, forKey: .totalImages)
        sampler = try c.decode(SamplerSpec.self, forKey: .sampler)
        seed = try c.decode(UInt64.self, forKey: .seed)
        seedDrawn = try c.decode(Bool.self, forKey: .seedDrawn)
        output = try c.decode(OutputSpec.self, forKey: .output)
        priority = try c.decode(Int.self, forKey: .priority)
        height = try c.decode(Int.self, forKey: .height)
        width = try c.decode(Int.self, forKey: .width)
        channels = try c.decode(Int.self, forKey: .channels)
        precision = try c.decodeIfPresent(ComputePrecision.self, forKey: .precision) ?? .fp32
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
