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

    public init(catalog: any ModelCatalog, defaultModel: String, limits: DaemonConfig.Limits = .init()) {
        self.catalog = catalog
        self.defaultModel = defaultModel
        self.limits = limits
    }

    public init(config: DaemonConfig, catalog: any ModelCatalog) {
        self.init(catalog: catalog, defaultModel: config.defaultModel, limits: config.limits)
    }

    static let topKeys = ["name", "model", "mode", "classes", "images_per_class", "images", "sampler", "seed", "output", "priority"]
    static let samplerKeys = SamplerSpec.CodingKeys.allCases.map(\.rawValue)
    static let langevinKeys = JobLangevin.CodingKeys.allCases.map(\.rawValue)
    static let outputKeys = ["format", "quality", "upscale"]

    /// Validates a job file. `fileName` supplies the default job name (its stem);
    /// `drawSeed` supplies a seed when the file has none.
    public func validate(_ bytes: [UInt8], fileName: String = "job.yml",
                         drawSeed: () -> UInt64 = { UInt64.random(in: 0 ..< (1 << 53)) }) throws(ValidationFailure) -> JobSpec {
        let root = try StrictYAML.load(bytes, limits: YAMLLimits(maxBytes: limits.jobFileBytes))
        var r = NodeReader()
        guard let top = r.mapping(root, path: "", known: Self.topKeys) else { throw ValidationFailure(r.errors) }

        // name
        var name = SafeName.sanitize(((fileName as NSString).lastPathComponent as NSString).deletingPathExtension)
        if let n = top["name"], let s = r.string(n, path: "name") {
            if let p = SafeName.problem(s) { r.fail("name", p, n) } else { name = s }
        }

        // model
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

        // mode
        var mode = GenerationMode.classConditional
        if let n = top["mode"], let s = r.choice(n, path: "mode", GenerationMode.allCases.map(\.rawValue)) {
            mode = GenerationMode(rawValue: s)!
        } else if top["mode"] == nil, let model, !model.isConditional {
            mode = .unconditional
        }

        // sampler (needed before classes for the classifier)
        var kind = SamplerKind.ddim
        var sm: [String: Node] = [:]
        if let n = top["sampler"] {
            if case .scalar = n, let s = r.choice(n, path: "sampler", SamplerKind.jobNames) {
                kind = SamplerKind(jobName: s)!
            } else if case .scalar = n {
            } else if let m = r.mapping(n, path: "sampler", known: Self.samplerKeys) {
                sm = m
                if let k = m["kind"], let s = r.choice(k, path: "sampler.kind", SamplerKind.jobNames) {
                    kind = SamplerKind(jobName: s)!
                }
            }
        }
        var sampler = SamplerSpec(kind: kind)
        let T = model?.diffusionSteps ?? 1000
        let maxSteps = min(limits.steps, T)

        if kind.usesRespacing {
            var steps: Int?
            if let n = sm["steps"] { steps = r.int(n, path: "sampler.steps", range: 1 ... maxSteps) ?? -1 }
            var respacing: String?
            if let n = sm["respacing"], let s = r.string(n, path: "sampler.respacing") {
                do {
                    let kept = try SamplerSpec.respacedTimesteps(s, diffusionSteps: T)
                    if let st = steps, st > 0, st != kept.count {
                        r.fail("sampler.respacing", "\"\(s)\" keeps \(kept.count) steps but sampler.steps is \(st)", n)
                    } else if kept.count > limits.steps {
                        r.fail("sampler.respacing", "\"\(s)\" keeps \(kept.count) steps, more than the limit of \(limits.steps)", n)
                    } else {
                        respacing = s
                        steps = kept.count
                    }
                } catch {
                    r.fail("sampler.respacing", error.description, n)
                }
            } else if sm["respacing"] == nil {
                let st = steps ?? 50
                if st > 0 {
                    let candidate = (kind.usesEta ? "ddim\(st)" : "\(st)")
                    if (try? SamplerSpec.respacedTimesteps(candidate, diffusionSteps: T))?.count == st {
                        respacing = candidate
                    } else {
                        respacing = "\(st)"
                    }
                }
                steps = st
            }
            if let st = steps, st > 0 { sampler.steps = st; sampler.respacing = respacing }
        } else {
            for key in ["steps", "respacing"] where sm[key] != nil {
                r.fail("sampler.\(key)", "does not apply to the langevin sampler (use sampler.langevin)", sm[key])
            }
        }

        if kind.usesEta {
            sampler.eta = 0
            if let n = sm["eta"], let v = r.double(n, path: "sampler.eta", range: 0 ... 1) { sampler.eta = v }
        } else if let n = sm["eta"] {
            r.fail("sampler.eta", "applies only to ddim and analytic-ddim, not \(kind.jobName)", n)
        }

        if kind.usesVariance {
            let fallback = model?.variance ?? .fixedSmall
            sampler.variance = fallback
            if let n = sm["variance"], let s = r.choice(n, path: "sampler.variance", VarianceType.allCases.map(\.rawValue)) {
                let v = VarianceType(rawValue: s)!
                if v == .learnedRange, let model, model.variance != .learnedRange {
                    r.fail("sampler.variance", "model \(model.name) does not learn its variance", n)
                } else {
                    sampler.variance = v
                }
            }
        } else if let n = sm["variance"] {
            r.fail("sampler.variance", "applies only to ddpm (the analytic samplers and ddim choose their own)", n)
        }

        if kind == .langevin {
            var l = LangevinParameters()
            if let n = sm["langevin"], let m = r.mapping(n, path: "sampler.langevin", known: Self.langevinKeys) {
                if let n = m["levels"], let v = r.int(n, path: "sampler.langevin.levels", range: 1 ... limits.steps) { l.levels = v }
                if let n = m["steps_per_level"], let v = r.int(n, path: "sampler.langevin.steps_per_level", range: 1 ... 1000) { l.stepsPerLevel = v }
                if let n = m["step_size"], let v = r.double(n, path: "sampler.langevin.step_size", range: 1e-12 ... 1) { l.stepSize = v }
                if let n = m["final_denoise"], let v = r.bool(n, path: "sampler.langevin.final_denoise") { l.finalDenoising = v }
            }
            if l.levels * l.stepsPerLevel > 10 * limits.steps {
                r.fail("sampler.langevin", "levels x steps_per_level = \(l.levels * l.stepsPerLevel) network evaluations, more than \(10 * limits.steps)", sm["langevin"])
            }
            sampler.langevin = l
        } else if let n = sm["langevin"] {
            r.fail("sampler.langevin", "applies only to the langevin sampler, not \(kind.jobName)", n)
        }

        if let n = sm["clip"], let v = r.bool(n, path: "sampler.clip") { sampler.clip = v }

        // guidance
        if mode.usesGuidanceScale {
            sampler.guidanceScale = mode == .classifierFree ? 3.0 : 1.0
            if let n = sm["guidance_scale"], let v = r.double(n, path: "sampler.guidance_scale", range: 0 ... 100) {
                sampler.guidanceScale = v
            }
        } else if let n = sm["guidance_scale"] {
            r.fail("sampler.guidance_scale", "applies only to classifier-guided and classifier-free modes, not \(mode.rawValue)", n)
        }
        var classifier: ModelInfo?
        if mode == .classifierGuided {
            let cname: String
            if let n = sm["classifier"], let s = r.string(n, path: "sampler.classifier") {
                cname = s
            } else {
                cname = "\(modelName)-classifier"
            }
            if let p = SafeName.problem(cname) {
                r.fail("sampler.classifier", p, sm["classifier"])
            } else if let c = catalog.model(named: cname), c.kind == "classifier" {
                classifier = c
                sampler.classifier = cname
            } else {
                let known = catalog.allModels().filter { $0.kind == "classifier" }.map(\.name)
                r.fail("sampler.classifier", "unknown classifier \"\(cname)\"; known: \(known.isEmpty ? "none" : known.joined(separator: ", "))", sm["classifier"])
            }
        } else if let n = sm["classifier"] {
            r.fail("sampler.classifier", "applies only to classifier-guided mode, not \(mode.rawValue)", n)
        }

        // mode against model
        if let model {
            switch mode {
            case .classConditional where !model.isConditional:
                r.fail("mode", "model \(model.name) is unconditional; use mode unconditional or classifier-guided", top["mode"])
            case .classifierFree where !model.isConditional || model.nullClass == nil:
                r.fail("mode", "classifier-free guidance needs a conditional model with a null class; \(model.name) has none", top["mode"])
            case .unconditional where model.isConditional && model.nullClass == nil:
                r.fail("mode", "model \(model.name) is conditional without a null class, so it cannot sample unconditionally", top["mode"])
            default: break
            }
        }

        // classes
        let classNames: [String] = (mode == .classifierGuided && !(model?.isConditional ?? false))
            ? (classifier?.classes ?? []) : (model?.classes ?? [])
        var classes: [ClassRef] = []
        if mode.usesClasses {
            if let n = top["classes"] {
                let items: [Node]
                if case .sequence = n { items = r.sequence(n, path: "classes") ?? [] } else { items = [n] }
                if items.isEmpty { r.fail("classes", "must list at least one class", n) }
                if items.count > 1000 { r.fail("classes", "at most 1000 entries", n) }
                for (i, item) in items.prefix(1000).enumerated() {
                    let p = "classes[\(i)]"
                    guard case let .scalar(s) = item else { r.fail(p, "expected a class name or index", item); continue }
                    if (s.style == .plain || s.style == .any), let idx = Int(s.string) {
                        if model != nil, !classNames.indices.contains(idx) {
                            r.fail(p, "class index must be between 0 and \(classNames.count - 1), got \(idx)", item)
                        } else if classNames.indices.contains(idx) {
                            classes.append(ClassRef(index: idx, name: classNames[idx]))
                        }
                    } else if let idx = classNames.firstIndex(of: s.string) {
                        classes.append(ClassRef(index: idx, name: classNames[idx]))
                    } else if let idx = classNames.firstIndex(where: { $0.caseInsensitiveCompare(s.string) == .orderedSame }) {
                        classes.append(ClassRef(index: idx, name: classNames[idx]))
                    } else if model != nil {
                        r.fail(p, "unknown class \"\(s.string.prefix(60))\"; known: \(classNames.joined(separator: ", "))", item)
                    }
                }
            } else {
                classes = classNames.enumerated().map { ClassRef(index: $0.offset, name: $0.element) }
            }
        } else if let n = top["classes"] {
            r.fail("classes", "does not apply to unconditional mode", n)
        }

        // counts
        var perClass: Int?
        var total = 0
        switch (top["images_per_class"], top["images"]) {
        case let (p?, t?):
            r.fail("images", "give either images or images_per_class, not both", t)
            _ = p
        case let (p?, nil):
            if !mode.usesClasses {
                r.fail("images_per_class", "does not apply to unconditional mode (use images)", p)
            } else if let v = r.int(p, path: "images_per_class", range: 1 ... limits.imagesPerJob) {
                perClass = v
                total = v * max(classes.count, 1)
                if total > limits.imagesPerJob {
                    r.fail("images_per_class", "\(v) per class x \(classes.count) classes = \(total) images, more than the limit of \(limits.imagesPerJob)", p)
                }
            }
        case let (nil, t?):
            if let v = r.int(t, path: "images", range: 1 ... limits.imagesPerJob) { total = v }
        case (nil, nil):
            r.fail("images", "missing: give images (a total) or images_per_class", nil)
        }

        // seed
        var seed: UInt64 = 0
        var drawn = false
        if let n = top["seed"], let v = r.uint64(n, path: "seed") {
            seed = v
        } else if top["seed"] == nil {
            seed = drawSeed()
            drawn = true
        }

        // output
        var output = OutputSpec()
        if let n = top["output"] {
            if case .scalar = n, let s = r.choice(n, path: "output", ImageFormat.allCases.map(\.rawValue)) {
                output.format = ImageFormat(rawValue: s)!
            } else if case .scalar = n {
            } else if let m = r.mapping(n, path: "output", known: Self.outputKeys) {
                if let f = m["format"], let s = r.choice(f, path: "output.format", ImageFormat.allCases.map(\.rawValue)) { output.format = ImageFormat(rawValue: s)! }
                if let q = m["quality"] {
                    if output.format != .jpeg {
                        r.fail("output.quality", "applies only to jpeg output", q)
                    } else if let v = r.int(q, path: "output.quality", range: 1 ... 100) {
                        output.quality = v
                    }
                }
                if let u = m["upscale"], let v = r.int(u, path: "output.upscale", range: 1 ... 16) { output.upscale = v }
            }
        }
        if output.format == .jpeg, output.quality == nil { output.quality = 95 }

        var priority = 0
        if let n = top["priority"], let v = r.int(n, path: "priority", range: -100 ... 100) { priority = v }

        if !r.errors.isEmpty { throw ValidationFailure(r.errors) }
        guard let model else { throw ValidationFailure([FieldError("model", "unknown model")]) }
        return JobSpec(name: name, model: model.name, mode: mode, classes: classes, imagesPerClass: perClass,
                       totalImages: total, sampler: sampler, seed: seed, seedDrawn: drawn, output: output,
                       priority: priority, height: model.height, width: model.width, channels: model.channels)
    }
}
