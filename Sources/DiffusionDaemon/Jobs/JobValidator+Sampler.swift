import DiffusionEngine
import Foundation
import ImageCodecs
import Yams

/// The sampler section of a job file (kind, steps, respacing, eta, variance, langevin, clip) and guidance.
extension JobValidator {
    func samplerSection(_ top: [String: Node], model: ModelInfo?, _ r: inout NodeReader) -> (SamplerSpec, [String: Node]) {
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
        if let head = kind.covarianceHead, let model, !model.covarianceHeads.contains(head) {
            r.fail(sm["kind"] == nil ? "sampler" : "sampler.kind",
                   "\(kind.jobName) needs the model's \(head.rawValue.uppercased()) covariance head, and \(model.name) ships none " +
                   "(\(head.fileName), trained with training/train_heads.py --kind \(head.rawValue) --export); " +
                   (model.covarianceHeads.isEmpty ? "use analytic-ddpm or analytic-ddim"
                                                  : "it ships \(model.covarianceHeads.map { $0.rawValue.uppercased() }.joined(separator: ", "))"),
                   sm["kind"] ?? top["sampler"])
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
                    let candidate = kind == .dpmSolverPlusPlus ? "dpmsolver\(st)" : (kind.usesEta ? "ddim\(st)" : "\(st)")
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

        if kind == .predictorCorrector {
            // Score SDE's defaults: snr 0.16, one corrector step per predictor step.
            sampler.snr = 0.16
            sampler.correctorSteps = 1
            if let n = sm["snr"], let v = r.double(n, path: "sampler.snr", range: 0.001 ... 10) { sampler.snr = v }
            if let n = sm["corrector_steps"], let v = r.int(n, path: "sampler.corrector_steps", range: 1 ... 100) {
                sampler.correctorSteps = v
                if let st = sampler.steps, st * (1 + v) > 10 * limits.steps {
                    r.fail("sampler.corrector_steps", "\(st) steps x (1 + \(v)) = \(st * (1 + v)) network evaluations, more than \(10 * limits.steps)", n)
                }
            }
        } else {
            for key in ["snr", "corrector_steps"] where sm[key] != nil {
                r.fail("sampler.\(key)", "applies only to the pc sampler, not \(kind.jobName)", sm[key])
            }
        }

        if kind == .langevin {
            var l = LangevinParameters.jobDefaults
            if let n = sm["langevin"], let m = r.mapping(n, path: "sampler.langevin", known: Self.langevinKeys) {
                if let n = m["levels"], let v = r.int(n, path: "sampler.langevin.levels", range: 1 ... limits.steps) { l.levels = v }
                if let n = m["steps_per_level"], let v = r.int(n, path: "sampler.langevin.steps_per_level", range: 1 ... 1000) { l.stepsPerLevel = v }
                if let n = m["step_size"], let v = r.double(n, path: "sampler.langevin.step_size", range: 1e-12 ... 1) { l.stepSize = v }
                if let n = m["final_denoise"], let v = r.bool(n, path: "sampler.langevin.final_denoise") { l.finalDenoising = v }
                if let n = m["sigma_max"], let v = r.double(n, path: "sampler.langevin.sigma_max", range: 1e-4 ... 1e4) { l.sigmaMax = v }
                if let n = m["sigma_min"], let v = r.double(n, path: "sampler.langevin.sigma_min", range: 1e-4 ... 1e4) { l.sigmaMin = v }
                if l.sigmaMin > l.sigmaMax {
                    r.fail("sampler.langevin.sigma_min", "\(l.sigmaMin) is above sigma_max \(l.sigmaMax): the levels run from sigma_max down to sigma_min", m["sigma_min"] ?? n)
                }
            }
            if l.levels * l.stepsPerLevel > 10 * limits.steps {
                r.fail("sampler.langevin", "levels x steps_per_level = \(l.levels * l.stepsPerLevel) network evaluations, more than \(10 * limits.steps)", sm["langevin"])
            }
            sampler.langevin = l
        } else if let n = sm["langevin"] {
            r.fail("sampler.langevin", "applies only to the langevin sampler, not \(kind.jobName)", n)
        }

        if let n = sm["clip"], let v = r.bool(n, path: "sampler.clip") { sampler.clip = v }
        return (sampler, sm)
    }

    func guidanceSection(_ sm: [String: Node], mode: GenerationMode, modelName: String, model: ModelInfo?, sampler: inout SamplerSpec,
                         _ r: inout NodeReader) -> ModelInfo? {
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
                if let model, model.isConditional, c.classes != model.classes {
                    r.fail("sampler.classifier", "classifier \(cname)'s classes (\(c.classes.joined(separator: ", "))) are not those of model \(model.name) (\(model.classes.joined(separator: ", ")))", sm["classifier"])
                }
            } else {
                let known = catalog.allModels().filter { $0.kind == "classifier" }.map(\.name)
                r.fail("sampler.classifier", "unknown classifier \"\(cname)\"; known: \(known.isEmpty ? "none" : known.joined(separator: ", "))", sm["classifier"])
            }
        } else if let n = sm["classifier"] {
            r.fail("sampler.classifier", "applies only to classifier-guided mode, not \(mode.rawValue)", n)
        }
        networkLabelSection(sm, mode: mode, model: model, sampler: &sampler, &r)
        return classifier
    }

    /// `sampler.network_label` (classifier guidance on a conditional model): the label the network
    /// sees. Default: its null class when it has one, else the requested class (ADM-G).
    func networkLabelSection(_ sm: [String: Node], mode: GenerationMode, model: ModelInfo?, sampler: inout SamplerSpec,
                             _ r: inout NodeReader) {
        let given = sm["network_label"]
        guard mode == .classifierGuided else {
            if let given { r.fail("sampler.network_label", "applies only to classifier-guided mode, not \(mode.rawValue)", given) }
            return
        }
        guard let model, model.isConditional else {
            if let given, let model {
                r.fail("sampler.network_label", "model \(model.name) is unconditional: its network sees no label", given)
            }
            return
        }
        var label: GuidedNetworkClass = model.nullClass == nil ? .requested : .null
        if let given, let s = r.choice(given, path: "sampler.network_label", GuidedNetworkClass.jobNames) {
            label = GuidedNetworkClass(jobName: s)!
            if label == .null && model.nullClass == nil {
                r.fail("sampler.network_label", "model \(model.name) has no null class; its network can only see the requested class (network_label: requested)", given)
            }
        }
        sampler.networkLabel = label
    }
}
