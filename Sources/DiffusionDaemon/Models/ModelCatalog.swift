import DiffusionEngine
import Foundation
import ModelBundles

/// What the daemon needs to know about a model bundle to validate jobs
/// against it (read from `<models>/<name>/model.json`, a `BundleManifest`; the engine loads the rest).
public struct ModelInfo: Codable, Sendable, Equatable {
    /// "unet" | "classifier" | "features".
    public var kind: String
    public var name: String
    public var classes: [String]
    /// The label meaning "no class" (unet bundles trained with label dropout).
    public var nullClass: Int?
    public var height: Int
    public var width: Int
    public var channels: Int
    /// The diffusion length T (unet bundles).
    public var diffusionSteps: Int?
    /// The variance the model was trained for (unet bundles).
    public var variance: VarianceType?
    /// The Extended-Analytic-DPM heads the bundle ships (sn-head.safetensors, npr-head.safetensors).
    public var covarianceHeads: [CovarianceHeadKind]

    public init(kind: String, name: String, classes: [String], nullClass: Int? = nil, height: Int, width: Int,
                channels: Int, diffusionSteps: Int? = 1000, variance: VarianceType? = .learnedRange,
                covarianceHeads: [CovarianceHeadKind] = []) {
        self.covarianceHeads = covarianceHeads
        self.kind = kind
        self.name = name
        self.classes = classes
        self.nullClass = nullClass
        self.height = height
        self.width = width
        self.channels = channels
        self.diffusionSteps = diffusionSteps
        self.variance = variance
    }

    /// True when the network takes a class label.
    public var isConditional: Bool { kind == "unet" && !classes.isEmpty }
}

/// Looks models up by name.
public protocol ModelCatalog: Sendable {
    func model(named name: String) -> ModelInfo?
    /// Every model it knows, for `diffusionctl models`.
    func allModels() -> [ModelInfo]
}

/// A fixed list of models (for tests).
public struct StaticModelCatalog: ModelCatalog {
    public var models: [ModelInfo]
    public init(_ models: [ModelInfo]) { self.models = models }
    public func model(named name: String) -> ModelInfo? { models.first { $0.name == name } }
    public func allModels() -> [ModelInfo] { models }
}

/// Bundles in a directory: `<root>/<name>/model.json`.
public struct DirectoryModelCatalog: ModelCatalog {
    public var root: String
    public init(root: String) { self.root = root }

    public func model(named name: String) -> ModelInfo? {
        guard SafeName.problem(name) == nil else { return nil }
        return Self.read(path: "\(root)/\(name)/model.json", folder: name)
    }

    public func allModels() -> [ModelInfo] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        return names.sorted().compactMap { model(named: $0) }
    }

    static func read(path: String, folder: String) -> ModelInfo? {
        guard let data = FileManager.default.contents(atPath: path),
              let m = try? JSONDecoder().decode(BundleManifest.self, from: data), let geometry = m.data else { return nil }
        return ModelInfo(kind: m.kind, name: folder, classes: m.classes ?? [], nullClass: m.nullClass,
                         height: geometry.height, width: geometry.width, channels: geometry.channels,
                         diffusionSteps: m.diffusion?.steps, variance: m.diffusion?.variance,
                         covarianceHeads: CovarianceHeadKind.allCases.filter { m.files[$0.fileName] != nil })
    }
}
