// The sampling stage's plan: the rows of the sweep (job files), their grid and cache.
import DiffusionDaemon
import DiffusionEngine
import Digests
import Foundation
import ModelBundles

/// One configuration of the sweep.
struct SweepRow {
    enum Group: String, Codable {
        /// FID against steps, one series per sampler (section 3).
        case steps
        /// Langevin dynamics at several budgets of network evaluations (section 3): annealed
        /// Langevin and the predictor-corrector sampler.
        case langevin
        /// Classifier guidance scale s (section 4).
        case classifierGuidance = "classifier_guidance"
        /// Classifier-free guidance weight w (section 4).
        case classifierFree = "classifier_free"
        /// The same jobs in bf16 as fp32 rows of the steps group (section 1).
        case precision
    }

    /// Unique and stable: part of the cache file name and the join key of the quality rows.
    var id: String
    var group: Group
    /// The line of the plots this row belongs to.
    var series: String
    /// The x value: steps K, network evaluations, s or w.
    var x: Double
    /// The job's `mode`.
    var mode: String
    /// The job's `sampler` mapping, in order.
    var sampler: [(String, String)]
    /// Steps of the chain (Langevin: levels x steps per level + the final denoising step).
    var chainSteps: Int
    /// The steps as the tables show them: "50", or "25 x 2 + 1" for Langevin.
    var stepsLabel: String
    /// Images of the row (the plan's N; the guidance rows may have their own).
    var n: Int
    /// The bundle files besides model.safetensors whose bytes the row's pixels depend on.
    var bundleFiles: [String] = []
    /// The job's `precision` (nil: the default, fp32).
    var precision: String? = nil

    /// UNet evaluations per image: one per step, two with classifier-free guidance (the
    /// conditional and the null-class row).
    var networkEvaluationsPerImage: Int { mode == "classifier-free" ? 2 * chainSteps : chainSteps }
    /// Noisy-classifier forward + backward passes per image (classifier guidance: one per step).
    var classifierEvaluationsPerImage: Int { mode == "classifier-guided" ? chainSteps : 0 }

    /// A one-line description of the settings.
    var settings: String {
        "mode \(mode); " + sampler.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + (precision.map { "; precision \($0)" } ?? "")
    }
}

/// The grid, N and seed of one variant, and where its samples are cached.
struct SweepPlan {
    /// Images per row of the steps and Langevin groups.
    var n: Int
    /// Images per row of the guidance groups.
    var guidanceN: Int
    var seed: UInt64
    var model: String
    var classifier: String
    var modelsDirectory: String
    var cacheDirectory: String
    var rows: [SweepRow]
    /// What the grid is, for the results.
    var grid: SweepGrid

    /// The job file of a row.
    func jobYAML(_ row: SweepRow) -> String {
        var lines = ["name: bench-\(row.id)", "model: \(model)", "mode: \(row.mode)", "images: \(row.n)", "sampler:"]
        for (k, v) in row.sampler { lines.append("  \(k): \(v)") }
        lines.append("seed: \(seed)")
        if let p = row.precision { lines.append("precision: \(p)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The validated job (every default written out), as the daemon would store it.
    func job(_ row: SweepRow) throws -> JobSpec {
        let validator = JobValidator(catalog: DirectoryModelCatalog(root: modelsDirectory), defaultModel: model)
        do {
            return try validator.validate(Array(jobYAML(row).utf8), fileName: "bench-\(row.id).yml")
        } catch {
            throw BenchError("row \(row.id): the job does not validate: \(error)")
        }
    }

    /// The cache key of a row: SHA-256 of every setting that determines its pixels (the validated
    /// job without its name, the content hashes of what the row reads of the bundles it uses, the
    /// engine's fixed batch). A file the row does not read (a head, the Gamma table) may change
    /// without invalidating it.
    func cacheKey(_ row: SweepRow) throws -> (key: String, text: String) {
        guard case .object(var spec)? = JSONValue.parse(try job(row).jsonString()) else {
            throw BenchError("row \(row.id): cannot read back its job spec")
        }
        spec["name"] = nil
        // Keys made before jobs had a precision did not name fp32, the only one there was.
        if spec["precision"] == .string("fp32") { spec["precision"] = nil }
        var models: [String: JSONValue] = [model: .string(try Self.contentHash(modelsDirectory, model, files: row.bundleFiles))]
        if row.mode == "classifier-guided" { models[classifier] = .string(try Self.contentHash(modelsDirectory, classifier, files: [])) }
        let key: JSONValue = .object([
            "format": .string(SampleCache.format), "job": .object(spec), "models": .object(models),
            // The Winograd kernel decides the fp32 images' bits (keys made before the engine had its own named none).
            "engine": .object(["network_rows": .number(64), "diffusiond": .string(DaemonVersion.string),
                               "winograd": .string(EngineImageGenerator.winogradKernel)]),
        ])
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let text = String(decoding: try enc.encode(key), as: UTF8.self)
        return (sha256Hex(text), text)
    }

    /// training/work/bench-samples/<id>-n<N>-<first 16 hex digits of the key>.safetensors
    func cachePath(_ row: SweepRow) -> String {
        let key = (try? cacheKey(row).key) ?? "unkeyed"
        return "\(cacheDirectory)/\(row.id)-n\(row.n)-\(key.prefix(16)).safetensors"
    }

    /// SHA-256 of a bundle's model.json without its recipe, its Analytic-DPM record and the hashes of
    /// the files not in `files` (model.safetensors always counts).
    static func contentHash(_ root: String, _ name: String, files: [String]) throws -> String {
        let data = try ModelBundle(directory: URL(fileURLWithPath: "\(root)/\(name)"), verifyChecksums: false).read("model.json")
        guard case .object(var manifest)? = JSONValue.parse(String(decoding: data, as: UTF8.self)),
              case .object(let hashes)? = manifest["files"] else {
            throw BenchError("\(name)/model.json: not a JSON object with files")
        }
        let read = Set(files + ["model.safetensors"])
        for file in read where hashes[file] == nil { throw BenchError("\(name) has no \(file)") }
        manifest["files"] = .object(hashes.filter { read.contains($0.key) })
        manifest["recipe"] = nil
        manifest["analytic_dpm"] = nil
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return SHA256Hex.of(try enc.encode(JSONValue.object(manifest)))
    }
}

/// The values swept, for the results and the report.
struct SweepGrid: Codable {
    var samplers: [String]
    var steps: [Int]
    var langevin: [LangevinBudget]
    var guidanceSampler: String
    var classifierScales: [Double]
    var classifierFreeWeights: [Double]
}

struct LangevinBudget: Codable {
    var levels: Int
    var stepsPerLevel: Int
    var stepSize: Double
    var sigmaMax: Double?
    var sigmaMin: Double?
    /// levels x steps per level + 1 (the final denoising step).
    var networkEvaluations: Int
}

extension SweepPlan {
    /// The sweep of `make bench` (quick: `make bench-quick`).
    static func make(options: Options) -> SweepPlan {
        let quick = options.quick
        let n = options.n ?? (quick ? 60 : 250)
        let guidanceN = options.guidanceN ?? n
        let steps = quick ? [10, 25, 50] : [10, 25, 50, 100]
        let samplers: [(id: String, series: String, entries: [(String, String)], files: [String])] = [
            ("ddpm-fixed-small", "DDPM (fixed small)", [("kind", "ddpm"), ("variance", "fixed_small")], []),
            ("ddpm-learned-range", "DDPM (learned range)", [("kind", "ddpm"), ("variance", "learned_range")], []),
            ("analytic-ddpm", "Analytic-DDPM", [("kind", "analytic-ddpm")], ["gamma.safetensors"]),
            ("npr-ddpm", "NPR-DDPM", [("kind", "npr-ddpm")], ["npr-head.safetensors"]),
            ("sn-ddpm", "SN-DDPM", [("kind", "sn-ddpm")], ["sn-head.safetensors"]),
            ("ddim-eta0", "DDIM (eta 0)", [("kind", "ddim"), ("eta", "0.0")], []),
            ("analytic-ddim", "Analytic-DDIM", [("kind", "analytic-ddim"), ("eta", "0.0")], ["gamma.safetensors"]),
            ("npr-ddim", "NPR-DDIM", [("kind", "npr-ddim"), ("eta", "0.0")], ["npr-head.safetensors"]),
            ("sn-ddim", "SN-DDIM", [("kind", "sn-ddim"), ("eta", "0.0")], ["sn-head.safetensors"]),
            ("dpm-solver-pp", "DPM-Solver++ (2M)", [("kind", "dpm-solver++")], []),
        ]
        var rows: [SweepRow] = []
        for s in samplers {
            for k in steps {
                rows.append(SweepRow(id: "\(s.id)-k\(k)", group: .steps, series: s.series, x: Double(k), mode: "class-conditional",
                                     sampler: [s.entries[0], ("steps", "\(k)")] + s.entries.dropFirst(), chainSteps: k, stepsLabel: "\(k)",
                                     n: n, bundleFiles: s.files))
            }
        }
        // Annealed Langevin with the schema's defaults for new jobs (noise range, step size), at the
        // budgets levels x steps per level + 1.
        var tuned = LangevinParameters.jobDefaults
        if let v = options.langevinSettings["sigma_max"] { tuned.sigmaMax = v }
        if let v = options.langevinSettings["sigma_min"] { tuned.sigmaMin = v }
        if let v = options.langevinSettings["step_size"] { tuned.stepSize = v }
        let budgets: [(Int, Int)] = quick ? [(25, 2)] : [(25, 2), (100, 2)]
        var langevin: [LangevinBudget] = []
        for (levels, perLevel) in budgets {
            let nfe = levels * perLevel + 1
            langevin.append(LangevinBudget(levels: levels, stepsPerLevel: perLevel, stepSize: tuned.stepSize, sigmaMax: tuned.sigmaMax,
                                           sigmaMin: tuned.sigmaMin, networkEvaluations: nfe))
            rows.append(SweepRow(id: "langevin-l\(levels)x\(perLevel)", group: .langevin, series: "Annealed Langevin", x: Double(nfe),
                                 mode: "class-conditional",
                                 sampler: [("kind", "langevin"),
                                           ("langevin", "{levels: \(levels), steps_per_level: \(perLevel), step_size: \(tuned.stepSize), "
                                            + "sigma_max: \(tuned.sigmaMax), sigma_min: \(tuned.sigmaMin), final_denoise: true}")],
                                 chainSteps: nfe, stepsLabel: "\(levels) x \(perLevel) + 1", n: n))
        }
        // Predictor-corrector (score SDE): K ancestral steps, each followed by one Langevin corrector step.
        for k in quick ? [25] : [25, 50] {
            rows.append(SweepRow(id: "pc-k\(k)", group: .langevin, series: "Predictor-corrector (snr 0.16)", x: Double(2 * k),
                                 mode: "class-conditional", sampler: [("kind", "pc"), ("steps", "\(k)"), ("corrector_steps", "1")],
                                 chainSteps: 2 * k, stepsLabel: "\(k) x (1 + 1)", n: n))
        }
        // Guidance at one fixed sampler: ancestral sampling with the learned variance on 25 respaced steps.
        let guidanceSteps = 25
        let guided: [(String, String)] = [("kind", "ddpm"), ("steps", "\(guidanceSteps)"), ("variance", "learned_range")]
        let scales: [Double] = quick ? [0, 1, 4, 10] : [0, 0.5, 1, 2, 4, 6, 8, 10]
        let weights: [Double] = quick ? [0, 1, 3, 5] : [0, 0.5, 1, 2, 3, 4, 5]
        let classifier = "\(options.model)-classifier"
        for s in scales {
            rows.append(SweepRow(id: "classifier-s\(Self.number(s))", group: .classifierGuidance, series: "Classifier guidance", x: s,
                                 mode: "classifier-guided",
                                 sampler: guided + [("guidance_scale", Self.number(s)), ("classifier", classifier)], chainSteps: guidanceSteps,
                                 stepsLabel: "\(guidanceSteps)", n: guidanceN))
        }
        for w in weights {
            rows.append(SweepRow(id: "cfg-w\(Self.number(w))", group: .classifierFree, series: "Classifier-free guidance", x: w,
                                 mode: "classifier-free", sampler: guided + [("guidance_scale", Self.number(w))], chainSteps: guidanceSteps,
                                 stepsLabel: "\(guidanceSteps)", n: guidanceN))
        }
        // bf16 twins of fp32 rows (same jobs, same seed): FID of the engine's precision: bf16.
        for id in quick ? ["ddpm-learned-range-k25"] : ["ddpm-learned-range-k50", "ddim-eta0-k50"] {
            guard var twin = rows.first(where: { $0.id == id }) else { continue }
            twin.id += "-bf16"; twin.group = .precision; twin.series += " bf16"; twin.precision = "bf16"
            rows.append(twin)
        }
        if let only = options.only {
            rows = rows.filter { row in only.contains { row.id.contains($0) } }
        }
        let grid = SweepGrid(samplers: samplers.map(\.series), steps: steps, langevin: langevin,
                             guidanceSampler: "ddpm, \(guidanceSteps) steps, variance learned_range",
                             classifierScales: scales, classifierFreeWeights: weights)
        return SweepPlan(n: n, guidanceN: guidanceN, seed: options.seed, model: options.model, classifier: classifier,
                         modelsDirectory: options.models, cacheDirectory: options.samples, rows: rows, grid: grid)
    }

    /// 0.5 -> "0.5", 2.0 -> "2".
    static func number(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(v) }
}
