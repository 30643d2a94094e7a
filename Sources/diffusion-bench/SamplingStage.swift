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
    /// The CPU that sampled the row (`MachineInfo.cpu`; bf16 rows differ between CPU families).
    var machine: String?
    var seconds: Double?
    var expectedSeconds: Double
    var error: String?
}

struct SamplingResult: Codable {
    var n: Int
    /// Images per row of the guidance groups (older results: n).
    var guidanceN: Int?
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
    let total = plan.rows.reduce(0.0) { $0 + calibration.seconds($1, n: $1.n) }
    var done = 0.0
    let started = seconds()
    let cpu = MachineInfo.current().cpu
    for (i, row) in plan.rows.enumerated() {
        let expected = calibration.seconds(row, n: row.n)
        let (key, keyText) = try plan.cacheKey(row)
        let path = plan.cachePath(row)
        var result = SweepRowResult(
            id: row.id, group: row.group, series: row.series, x: row.x, n: row.n, seed: plan.seed, settings: row.settings,
            stepsLabel: row.stepsLabel,
            networkEvaluationsPerImage: row.networkEvaluationsPerImage, classifierEvaluationsPerImage: row.classifierEvaluationsPerImage,
            job: plan.jobYAML(row), cacheFile: path, cacheKey: key, cached: false, expectedSeconds: expected)
        if !options.refreshSamples, let set = try? SampleCache.read(path), set.metadata["key"] == keyText, set.count == row.n {
            result.cached = true
            result.samplingConfiguration = set.metadata["sampling_configuration"].flatMap(JSONValue.parse)
            result.seconds = set.metadata["seconds"].flatMap(Double.init)
            result.samplingDate = set.metadata["date"]
            result.machine = set.metadata["cpu"]
            log(String(format: "[%d/%d] %@: cached (%@)", i + 1, plan.rows.count, row.id, path))
        } else {
            do {
                let job = try plan.job(row)
                let t0 = seconds()
                let images = try await generator.generate(job: job, indices: Array(0..<row.n), context: GenerationContext(threads: options.dnnlThreads ?? ComputeRuntime.dnnlThreads))
                let elapsed = seconds() - t0
                guard let first = images.first else { throw BenchError("no images") }
                let c = first.channels, h = first.height, w = first.width, plane = h * w
                var pixels = [UInt8](repeating: 0, count: row.n * c * plane)
                for (k, image) in images.enumerated() {
                    for ch in 0..<c { for p in 0..<plane { pixels[(k * c + ch) * plane + p] = image.pixels[p * c + ch] } }
                }
                let configuration = first.recordFields["sampling_configuration"] ?? "{}"
                let date = ResultsFile.isoDate()
                try SampleCache.write(SampleSet(
                    pixels: pixels, shape: [row.n, c, h, w], requestedClasses: images.map { $0.classIndex ?? -1 },
                    metadata: ["key": keyText, "row": row.id, "job": plan.jobYAML(row), "sampling_configuration": configuration,
                               "seconds": String(elapsed), "date": date, "cpu": cpu]), to: path)
                result.samplingConfiguration = JSONValue.parse(configuration)
                result.seconds = elapsed
                result.samplingDate = date
                result.machine = cpu
                log(String(format: "[%d/%d] %@: %d images in %@ (expected %@; %.0f network rows/s)", i + 1, plan.rows.count, row.id,
                           row.n, formatSeconds(elapsed), formatSeconds(expected),
                           Double(row.networkEvaluationsPerImage * row.n) / elapsed))
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
    return SamplingResult(n: plan.n, guidanceN: plan.guidanceN, seed: plan.seed, model: plan.model, classifier: plan.classifier,
                          classes: "image i asks for class i mod 10, N/10 images per class", grid: plan.grid,
                          calibration: calibration, cacheDirectory: plan.cacheDirectory, rows: results)
}

/// Predicted seconds of the rows still to sample.
func expectedSamplingSeconds(plan: SweepPlan, calibration: SamplingCalibration, options: Options) -> Double {
    plan.rows.reduce(0.0) { sum, row in
        if !options.refreshSamples, let (key, text) = try? plan.cacheKey(row), key.count > 0,
           let set = try? SampleCache.read(plan.cachePath(row)), set.metadata["key"] == text { return sum }
        return sum + calibration.seconds(row, n: row.n)
    }
}
