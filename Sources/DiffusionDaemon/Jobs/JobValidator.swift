import DiffusionEngine
import Foundation
import ImageCodecs
import Yams

/// Turns a job file (YAML or JSON) into a `JobSpec`, or into errors that name
/// the field path and the problem. The schema is documented in
/// `spool/examples/README.md`.
public struct JobValidator: Sendable {
    public var catalog: any ModelCatalog
    public var defaultModel: String
    public var limits: DaemonConfig.Limits
    /// The precision of a job that names none.
    public var defaultPrecision: ComputePrecision
    /// The CPU a job's precision must run on.
    public var cpu: CPUFeatures

    public init(catalog: any ModelCatalog, defaultModel: String, limits: DaemonConfig.Limits = .init(),
                defaultPrecision: ComputePrecision = .fp32, cpu: CPUFeatures = .current) {
        self.catalog = catalog
        self.defaultModel = defaultModel
        self.limits = limits
        self.defaultPrecision = defaultPrecision
        self.cpu = cpu
    }

    public init(config: DaemonConfig, catalog: any ModelCatalog) {
        self.init(catalog: catalog, defaultModel: config.defaultModel, limits: config.limits, defaultPrecision: config.precision)
    }

    static let topKeys = ["name", "model", "mode", "classes", "images_per_class", "images", "sampler", "seed", "output", "priority",
                          "precision"]
    static let samplerKeys = SamplerSpec.CodingKeys.allCases.map(\.rawValue)
    static let langevinKeys = JobLangevin.CodingKeys.allCases.map(\.rawValue)
    static let outputKeys = ["format", "quality", "upscale"]

    /// Foundation's JSON parse error in a few words.
    static func jsonReason(_ error: any Error) -> String {
        let info = (error as NSError).userInfo
        return (info["NSDebugDescription"] as? String) ?? "\(error)"
    }

    /// Validates a job file. `fileName` supplies the default job name (its stem);
    /// `drawSeed` supplies a seed when the file has none. The sections are read in the
    /// order below (the sampler before the classes, which may come from the classifier).
    public func validate(_ bytes: [UInt8], fileName: String = "job.yml",
                         drawSeed: () -> UInt64 = { UInt64.random(in: 0 ..< (1 << 53)) }) throws(ValidationFailure) -> JobSpec {
        let root = try StrictYAML.load(bytes, limits: YAMLLimits(maxBytes: limits.jobFileBytes))
        if fileName.lowercased().hasSuffix(".json") {
            // YAML is a superset of JSON: a .json file must also be JSON, not YAML under that name.
            do { _ = try JSONSerialization.jsonObject(with: Data(bytes)) } catch {
                throw ValidationFailure([FieldError("", "a .json job file must be JSON (this is not: \(Self.jsonReason(error))); name the file .yml for YAML")])
            }
        }
        var r = NodeReader()
        guard let top = r.mapping(root, path: "", known: Self.topKeys) else { throw ValidationFailure(r.errors) }
        let name = nameSection(top, fileName: fileName, &r)
        let (modelName, model) = modelSection(top, &r)
        let mode = modeSection(top, model: model, &r)
        var (sampler, sm) = samplerSection(top, model: model, &r)
        let classifier = guidanceSection(sm, mode: mode, modelName: modelName, model: model, sampler: &sampler, &r)
        modeAgainstModel(top, mode: mode, model: model, &r)
        let classes = classesSection(top, mode: mode, model: model, classifier: classifier, &r)
        let (perClass, total) = countsSection(top, mode: mode, classes: classes, &r)
        let (seed, drawn) = seedSection(top, drawSeed: drawSeed, &r)
        let output = outputSection(top, &r)
        let priority = prioritySection(top, &r)
        let precision = precisionSection(top, &r)
        if !r.errors.isEmpty { throw ValidationFailure(r.errors) }
        guard let model else { throw ValidationFailure([FieldError("model", "unknown model")]) }
        return JobSpec(name: name, model: model.name, mode: mode, classes: classes, imagesPerClass: perClass,
                       totalImages: total, sampler: sampler, seed: seed, seedDrawn: drawn, output: output,
                       priority: priority, height: model.height, width: model.width, channels: model.channels,
                       precision: precision)
    }

    /// `precision`: fp32 or bf16 (the config's `precision` when absent); bf16 only on a CPU that has it.
    func precisionSection(_ top: [String: Node], _ r: inout NodeReader) -> ComputePrecision {
        top["precision"].flatMap { r.precision($0, path: "precision", cpu: cpu) } ?? defaultPrecision
    }

    // MARK: - name, model, mode

    func nameSection(_ top: [String: Node], fileName: String, _ r: inout NodeReader) -> String {
        var name = SafeName.sanitize(((fileName as NSString).lastPathComponent as NSString).deletingPathExtension)
        if let n = top["name"], let s = r.string(n, path: "name") {
            if let p = SafeName.problem(s) { r.fail("name", p, n) } else { name = s }
        }
        return name
    }

    func modelSection(_ top: [String: Node], _ r: inout NodeReader) -> (name: String, model: ModelInfo?) {
        var modelName = defaultModel
        var model: ModelInfo?
        if let n = top["model"], let s = r.string(n, path: "model") {
            if let p = SafeName.problem(s) { r.fail("model", p, n) } else { modelName = s }
        }
        if SafeName.problem(modelName) == nil {
            model = catalog.model(named: modelName)
            if model == nil {
                let known = catalog.allModels().filter { $0.kind == "unet" }.map(\.name)
                r.fail("model", "unknown model \"\(modelName)\"; known: \(known.isEmpty ? "none" : known.joined(separator: ", "))", top["model"])
            } else if model?.kind != "unet" {
                r.fail("model", "\"\(modelName)\" is a \(model!.kind) bundle, not a diffusion model", top["model"])
                model = nil
            }
        }
        return (modelName, model)
    }

    func modeSection(_ top: [String: Node], model: ModelInfo?, _ r: inout NodeReader) -> GenerationMode {
        var mode = GenerationMode.classConditional
        if let n = top["mode"], let s = r.choice(n, path: "mode", GenerationMode.allCases.map(\.rawValue)) {
            mode = GenerationMode(rawValue: s)!
        } else if top["mode"] == nil, let model, !model.isConditional {
            mode = .unconditional
        }
        return mode
    }
}
