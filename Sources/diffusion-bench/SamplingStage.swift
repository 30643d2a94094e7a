// Stage "sampling" (BENCHMARKS.md sections 3 and 4, the sampling half): the sweep of samplers x
// steps, Langevin budgets, classifier-guidance scales and classifier-free weights. Every row is
// a job file (the daemon's schema, spool/examples/README.md), validated by the daemon's own
// JobValidator and sampled in-process by the daemon's EngineImageGenerator, so a row's images
// are exactly those `diffusionctl submit` of the same file would write. N images per row,
// classes i mod 10 (N is a multiple of 10: balanced), one fixed seed for every row.
import DiffusionDaemon
import DiffusionEngine
import Foundation
import ModelBundles

/// One configuration of the sweep.
struct SweepRow {
    enum Group: String, Codable {
        /// FID against steps, one series per sampler (section 3).
        case steps
        /// Annealed Langevin at several budgets of network evaluations (section 3).
        case langevin
        /// Classifier guidance scale s (section 4).
        case classifierGuidance = "classifier_guidance"
        /// Classifier-free guidance weight w (section 4).
        case classifierFree = "classifier_free"
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

    /// UNet evaluations per image: one per step, two with classifier-free guidance (the
    /// conditional and the null-class row).
    var networkEvaluationsPerImage: Int { mode == "classifier-free" ? 2 * chainSteps : chainSteps }
    /// Noisy-classifier forward + backward passes per image (classifier guidance: one per step).
    var classifierEvaluationsPerImage: Int { mode == "classifier-guided" ? chainSteps : 0 }

    /// A one-line description of the settings.
    var settings: String {
        "mode \(mode); " + sampler.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
    }
}

/// The grid, N and seed of one variant, and where its samples are cached.
struct SweepPlan {
    var n: Int
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
        var lines = ["name: bench-\(row.id)", "model: \(model)", "mode: \(row.mode)", "images: \(n)", "sampler:"]
        for (k, v) in row.sampler { lines.append("  \(k): \(v)") }
        lines.append("seed: \(seed)")
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
    /// job without its name, the content hashes of the bundles it uses, the engine's fixed batch).
    func cacheKey(_ row: SweepRow) throws -> (key: String, text: String) {
        guard case .object(var spec)? = JSONValue.parse(try job(row).jsonString()) else {
            throw BenchError("row \(row.id): cannot read back its job spec")
        }
        spec["name"] = nil
        var models: [String: JSONValue] = [model: .string(try Self.contentHash(modelsDirectory, model))]
        if row.mode == "classifier-guided" { models[classifier] = .string(try Self.contentHash(modelsDirectory, classifier)) }
        let key: JSONValue = .object([
            "format": .string(SampleCache.format), "job": .object(spec), "models": .object(models),
            "engine": .object(["network_rows": .number(64), "diffusiond": .string(DaemonVersion.string)]),
        ])
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let text = String(decoding: try enc.encode(key), as: UTF8.self)
        return (sha256Hex(text), text)
    }

    /// training/work/bench-samples/<id>-n<N>-<first 16 hex digits of the key>.safetensors
    func cachePath(_ row: SweepRow) -> String {
        let key = (try? cacheKey(row).key) ?? "unkeyed"
        return "\(cacheDirectory)/\(row.id)-n\(n)-\(key.prefix(16)).safetensors"
    }

    static func contentHash(_ root: String, _ name: String) throws -> String {
        ModelBundle.sha256Hex(of: try ModelBundle(directory: URL(fileURLWithPath: "\(root)/\(name)"), verifyChecksums: false).read("model.json"))
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
    /// levels x steps per level + 1 (the final denoising step).
    var networkEvaluations: Int
}

extension SweepPlan {
    /// The sweep of `make bench` (quick: `make bench-quick`).
    static func make(options: Options) -> SweepPlan {
        let quick = options.quick
        let steps = quick ? [10, 25, 50] : [10, 25, 50, 100, 200]
        let samplers: [(id: String, series: String, entries: [(String, String)])] = [
            ("ddpm-fixed-small", "DDPM (fixed small)", [("kind", "ddpm"), ("variance", "fixed_small")]),
            ("ddpm-learned-range", "DDPM (learned range)", [("kind", "ddpm"), ("variance", "learned_range")]),
            ("ddim-eta0", "DDIM (eta 0)", [("kind", "ddim"), ("eta", "0.0")]),
            ("analytic-ddpm", "Analytic-DDPM", [("kind", "analytic-ddpm")]),
            ("analytic-ddim", "Analytic-DDIM", [("kind", "analytic-ddim"), ("eta", "0.0")]),
        ]
        var rows: [SweepRow] = []
        for s in samplers {
            for k in steps {
                rows.append(SweepRow(id: "\(s.id)-k\(k)", group: .steps, series: s.series, x: Double(k), mode: "class-conditional",
                                     sampler: [s.entries[0], ("steps", "\(k)")] + s.entries.dropFirst(), chainSteps: k, stepsLabel: "\(k)"))
            }
        }
        // Langevin: the schema's step size, at the budgets (levels x steps per level + 1).
        let budgets: [(Int, Int)] = quick ? [(25, 2)] : [(25, 2), (100, 2), (100, 5)]
        var langevin: [LangevinBudget] = []
        for (levels, perLevel) in budgets {
            let nfe = levels * perLevel + 1
            langevin.append(LangevinBudget(levels: levels, stepsPerLevel: perLevel, stepSize: 2e-5, networkEvaluations: nfe))
            rows.append(SweepRow(id: "langevin-l\(levels)x\(perLevel)", group: .langevin, series: "Annealed Langevin", x: Double(nfe),
                                 mode: "class-conditional",
                                 sampler: [("kind", "langevin"),
                                           ("langevin", "{levels: \(levels), steps_per_level: \(perLevel), step_size: 0.00002, final_denoise: true}")],
                                 chainSteps: nfe, stepsLabel: "\(levels) x \(perLevel) + 1"))
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
                                 stepsLabel: "\(guidanceSteps)"))
        }
        for w in weights {
            rows.append(SweepRow(id: "cfg-w\(Self.number(w))", group: .classifierFree, series: "Classifier-free guidance", x: w,
                                 mode: "classifier-free", sampler: guided + [("guidance_scale", Self.number(w))], chainSteps: guidanceSteps,
                                 stepsLabel: "\(guidanceSteps)"))
        }
        if let only = options.only {
            rows = rows.filter { row in only.contains { row.id.contains($0) } }
        }
        let grid = SweepGrid(samplers: samplers.map(\.series), steps: steps, langevin: langevin,
                             guidanceSampler: "ddpm, \(guidanceSteps) steps, variance learned_range",
                             classifierScales: scales, classifierFreeWeights: weights)
        return SweepPlan(n: options.n ?? (quick ? 60 : 250), seed: options.seed, model: options.model, classifier: classifier,
                         modelsDirectory: options.models, cacheDirectory: options.samples, rows: rows, grid: grid)
    }

    /// 0.5 -> "0.5", 2.0 -> "2".
    static func number(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(v) }
}

// MARK: - Cost

/// The engine's speed on the sweep's work, measured at the start of the stage (or assumed).
struct SamplingCalibration: Codable {
    /// UNet rows per second inside a sampling chain (sampler step and noise included), batch 64.
    var unetRowsPerSecond: Double
    /// Noisy-classifier forward + input-gradient rows per second, batch 64.
    var classifierRowsPerSecond: Double
    /// "measured" or "assumed".
    var source: String

    static let assumed = SamplingCalibration(unetRowsPerSecond: 363, classifierRowsPerSecond: 945, source: "assumed")

    /// Times a 4-step chain on 64 images and the classifier gradient on 64 rows.
    static func measure(options: Options) throws -> SamplingCalibration {
        let models = URL(fileURLWithPath: options.models)
        let bundle = try ModelBundle(directory: models.appendingPathComponent(options.model))
        let predictor = UNetNoisePredictor(try bundle.makeUNet())
        var c = SamplingConfiguration()
        if let d = bundle.manifest.diffusion { c.diffusion = d }
        c.respacing = try TimestepRespacing(parsing: "4")
        let a = predictor.network.architecture
        let shape = ImageShape(channels: a.inChannels, height: a.imageSize, width: a.imageSize)
        let pipeline = try SamplingPipeline(configuration: c, predictor: predictor, imageShape: shape)
        let indices = Array(0..<64), classes = indices.map { $0 % 10 }
        let chain = try timed(minSeconds: 0.5, minReps: 2) { _ = try pipeline.generate(imageIndices: indices, classes: classes) }
        var classifierRate = assumed.classifierRowsPerSecond
        let classifierDirectory = models.appendingPathComponent("\(options.model)-classifier")
        if FileManager.default.fileExists(atPath: classifierDirectory.path + "/model.json") {
            let gradient = ClassifierGuidanceGradient(try ModelBundle(directory: classifierDirectory).makeClassifier())
            let x = Tensor(shape: shape.batch(64))
            for i in 0..<x.count { x.data[i] = Float(sin(Double(i) * 0.21)) }
            let t = indices.map { ($0 * 13) % 1000 }
            let g = try timed(minSeconds: 0.3, minReps: 2) { _ = try gradient.gradientOfLogProbability(x, timesteps: t, classes: classes) }
            classifierRate = 64 / g.median
        }
        return SamplingCalibration(unetRowsPerSecond: 64 * 4 / chain.median, classifierRowsPerSecond: classifierRate, source: "measured")
    }

    /// Predicted seconds of one row: networks run on chunks of exactly 64 rows.
    func seconds(_ row: SweepRow, n: Int) -> Double {
        func padded(_ rows: Int) -> Double { Double((rows + 63) / 64 * 64) }
        let unet = padded(row.networkEvaluationsPerImage / row.chainSteps * n) * Double(row.chainSteps) / unetRowsPerSecond
        let classifier = row.classifierEvaluationsPerImage > 0 ? padded(n) * Double(row.chainSteps) / classifierRowsPerSecond : 0
        return unet + classifier + 0.2
    }
}

// MARK: - The stage

struct SweepRowResult: Codable {
    var id: String
    var group: SweepRow.Group
    var series: String
    var x: Double
    var n: Int
    var seed: UInt64
    var settings: String
    var stepsLabel: String
    var networkEvaluationsPerImage: Int
    var classifierEvaluationsPerImage: Int
    /// The job file that reproduces the row through the daemon.
    var job: String
    /// The engine's resolved sampling configuration (the record in every image).
    var samplingConfiguration: JSONValue?
    var cacheFile: String
    var cacheKey: String
    /// Whether the samples came from the cache (then `seconds` is that of the run that made them).
    var cached: Bool
    var samplingDate: String?
    var seconds: Double?
    var expectedSeconds: Double
    var error: String?
}

struct SamplingResult: Codable {
    var n: Int
    var seed: UInt64
    var model: String
    var classifier: String
    var classes: String
    var grid: SweepGrid
    var calibration: SamplingCalibration
    var cacheDirectory: String
    var rows: [SweepRowResult]
}

/// Samples every row that is not cached yet.
func runSamplingStage(plan: SweepPlan, calibration: SamplingCalibration, options: Options) async throws -> SamplingResult {
    let generator = EngineImageGenerator(modelsDirectory: plan.modelsDirectory, cacheBytes: 2048 << 20,
                                         threads: options.dnnlThreads ?? ComputeRuntime.dnnlThreads)
    var results: [SweepRowResult] = []
    let total = plan.rows.reduce(0.0) { $0 + calibration.seconds($1, n: plan.n) }
    var done = 0.0
    let started = seconds()
    for (i, row) in plan.rows.enumerated() {
        let expected = calibration.seconds(row, n: plan.n)
        let (key, keyText) = try plan.cacheKey(row)
        let path = plan.cachePath(row)
        var result = SweepRowResult(
            id: row.id, group: row.group, series: row.series, x: row.x, n: plan.n, seed: plan.seed, settings: row.settings,
            stepsLabel: row.stepsLabel,
            networkEvaluationsPerImage: row.networkEvaluationsPerImage, classifierEvaluationsPerImage: row.classifierEvaluationsPerImage,
            job: plan.jobYAML(row), cacheFile: path, cacheKey: key, cached: false, expectedSeconds: expected)
        if !options.refreshSamples, let set = try? SampleCache.read(path), set.metadata["key"] == keyText, set.count == plan.n {
            result.cached = true
            result.samplingConfiguration = set.metadata["sampling_configuration"].flatMap(JSONValue.parse)
            result.seconds = set.metadata["seconds"].flatMap(Double.init)
            result.samplingDate = set.metadata["date"]
            log(String(format: "[%d/%d] %@: cached (%@)", i + 1, plan.rows.count, row.id, path))
        } else {
            do {
                let job = try plan.job(row)
                let t0 = seconds()
                let images = try await generator.generate(job: job, indices: Array(0..<plan.n), context: GenerationContext(threads: 2))
                let elapsed = seconds() - t0
                guard let first = images.first else { throw BenchError("no images") }
                let c = first.channels, h = first.height, w = first.width, plane = h * w
                var pixels = [UInt8](repeating: 0, count: plan.n * c * plane)
                for (k, image) in images.enumerated() {
                    for ch in 0..<c { for p in 0..<plane { pixels[(k * c + ch) * plane + p] = image.pixels[p * c + ch] } }
                }
                let configuration = first.recordFields["sampling_configuration"] ?? "{}"
                let date = ResultsFile.isoDate()
                try SampleCache.write(SampleSet(
                    pixels: pixels, shape: [plan.n, c, h, w], requestedClasses: images.map { $0.classIndex ?? -1 },
                    metadata: ["key": keyText, "row": row.id, "job": plan.jobYAML(row), "sampling_configuration": configuration,
                               "seconds": String(elapsed), "date": date]), to: path)
                result.samplingConfiguration = JSONValue.parse(configuration)
                result.seconds = elapsed
                result.samplingDate = date
                log(String(format: "[%d/%d] %@: %d images in %@ (expected %@; %.0f network rows/s)", i + 1, plan.rows.count, row.id,
                           plan.n, formatSeconds(elapsed), formatSeconds(expected),
                           Double(row.networkEvaluationsPerImage * plan.n) / elapsed))
            } catch {
                result.error = "\(error)"
                log("[\(i + 1)/\(plan.rows.count)] \(row.id): FAILED: \(error)")
            }
        }
        results.append(result)
        done += expected
        if !result.cached && i + 1 < plan.rows.count {
            log(String(format: "    %.0f%% of the expected work, %@ elapsed", 100 * done / total, formatSeconds(seconds() - started)))
        }
    }
    return SamplingResult(n: plan.n, seed: plan.seed, model: plan.model, classifier: plan.classifier,
                          classes: "image i asks for class i mod 10, N/10 images per class", grid: plan.grid,
                          calibration: calibration, cacheDirectory: plan.cacheDirectory, rows: results)
}

/// Predicted seconds of the rows still to sample.
func expectedSamplingSeconds(plan: SweepPlan, calibration: SamplingCalibration, options: Options) -> Double {
    plan.rows.reduce(0.0) { sum, row in
        if !options.refreshSamples, let (key, text) = try? plan.cacheKey(row), key.count > 0,
           let set = try? SampleCache.read(plan.cachePath(row)), set.metadata["key"] == text { return sum }
        return sum + calibration.seconds(row, n: plan.n)
    }
}
