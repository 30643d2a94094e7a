// Stage "daemon" (BENCHMARKS.md sections 2 and 5): the real diffusiond binary on a private
// config (spool, output and state under training/work/bench-daemon/, the checkout's models):
//   run 1 (preload: [fashion-mnist], the installed service's default): process start -> READY=1
//         (read from a NOTIFY_SOCKET we own, as systemd would), the model load the database
//         records, a 256-image job (diffusionctl submit -> done) and its peak RSS, then small
//         warm jobs;
//   run 2 (preload: all three bundles): READY=1 and the RSS with every bundle cached, and after
//         a small classifier-guided job.
// The engine alone runs the 256-image job's work in this process (same sampling configuration,
// seed and batches of 64) before run 1 and after run 2; the daemon's overhead is measured
// against their mean, and its images are compared with the engine's bit for bit.
import DiffusionDaemon
import DiffusionEngine
import Foundation
import ImageCodecs
import ModelBundles
import Provenance
#if canImport(Glibc)
import Glibc
#endif

/// The engine alone: the images of a job file, sampled in batches of `batch` as the daemon does,
/// with the daemon's own validator and `SamplingPlan` (so the configuration is the daemon's).
struct EngineRun {
    let predictor: UNetNoisePredictor
    let manifest: BundleManifest
    let spec: JobSpec
    let shape: ImageShape

    init(models: String, job: String) throws {
        spec = try JobValidator(catalog: DirectoryModelCatalog(root: models), defaultModel: "fashion-mnist")
            .validate(Array(job.utf8), fileName: "engine-run.yml")
        let bundle = try ModelBundle(directory: URL(fileURLWithPath: "\(models)/\(spec.model)"))
        manifest = bundle.manifest
        predictor = UNetNoisePredictor(try bundle.makeUNet())
        let a = predictor.network.architecture
        shape = ImageShape(channels: a.inChannels, height: a.imageSize, width: a.imageSize)
    }

    /// Seconds, the pixels of every image (index order) and the resolved configuration.
    func run(batch: Int) throws -> (seconds: Double, pixels: [[UInt8]], resolved: SamplingConfiguration) {
        var pixels: [[UInt8]] = []
        var resolved = SamplingConfiguration()
        let t0 = seconds()
        var first = 0
        let images = spec.totalImages
        while first < images {
            let indices = Array(first ..< min(first + batch, images))
            let plan = try SamplingPlan(job: spec, manifest: manifest, indices: indices, gamma: nil)
            let pipeline = try SamplingPipeline(configuration: plan.configuration, predictor: predictor, imageShape: shape)
            resolved = pipeline.configuration
            let x = try pipeline.generate(imageIndices: indices, classes: plan.networkClasses)
            let bytes = x.pixelBytes()
            let per = shape.elementCount
            for n in 0..<indices.count { pixels.append(Array(bytes[n * per ..< (n + 1) * per])) }
            first += indices.count
        }
        return (seconds() - t0, pixels, resolved)
    }
}

let e2eSeed: UInt64 = 6

func e2eJobYAML(name: String, images: Int, steps: Int) -> String {
    """
    name: \(name)
    model: fashion-mnist
    mode: class-conditional
    images: \(images)
    sampler:
      kind: ddim
      steps: \(steps)
      eta: 0.0
    seed: \(e2eSeed)

    """
}

func runDaemonStage(_ options: Options) throws -> DaemonResult {
    let bin = options.bin
    for tool in ["diffusiond", "diffusionctl"] where !FileManager.default.isExecutableFile(atPath: "\(bin)/\(tool)") {
        throw BenchError("\(bin)/\(tool) is missing: build every product first (swift build -c release ...)")
    }
    let models = URL(fileURLWithPath: options.models).standardizedFileURL.path
    let root = URL(fileURLWithPath: options.work).standardizedFileURL.path + "/bench-daemon"
    let images = 256, steps = 50, batch = 64
    let warmImages = 10, warmSteps = 25
    var notes: [String] = []
    let mib = { (kib: Int) in Double(kib) / 1024 }

    let engine = try EngineRun(models: models, job: e2eJobYAML(name: "bench-e2e-\(images)", images: images, steps: steps))
    log("engine alone: \(images) images, DDIM \(steps) steps, batches of \(batch) ...")
    let before = try engine.run(batch: batch)
    log(String(format: "engine alone: %.2f s (%.1f img/s)", before.seconds, Double(images) / before.seconds))
    let warmEngine = try EngineRun(models: models, job: e2eJobYAML(name: "bench-warm", images: warmImages, steps: warmSteps))
    _ = try warmEngine.run(batch: batch)   // builds the plans, as the daemon's cached model has them
    let warmEngineRun = try warmEngine.run(batch: batch)

    // Run 1: preload fashion-mnist; the 256-image job; warm jobs.
    log("run 1: diffusiond with preload [fashion-mnist]")
    let d1 = try DaemonUnderTest(bin: bin, root: root + "/run1", models: models, preload: ["fashion-mnist"])
    defer { d1.stop() }
    let ready1 = try d1.waitReady()
    let loads1 = try d1.modelLoads()
    let rssReady = d1.memory?.rssKiB ?? 0
    log(String(format: "READY=1 after %.2f s (model loads: %@)", ready1,
               loads1.map { String(format: "%@ %.2f s", $0.name, $0.loadSeconds) }.joined(separator: ", ")))
    var maxRss = 0
    let e2e = try d1.run(job: e2eJobYAML(name: "bench-e2e-\(images)", images: images, steps: steps), name: "bench-e2e-\(images)") {
        if let m = d1.memory { maxRss = max(maxRss, m.rssKiB) }
    }
    let peakDuringJob = d1.memory?.peakKiB ?? 0
    log(String(format: "daemon: %d images submit -> done %.2f s (ingest %.2f s, claim %.2f s, run %.2f s); peak RSS %.1f MiB",
               images, e2e.submitToDoneSeconds, e2e.submitToIngestSeconds, e2e.ingestToStartSeconds, e2e.runSeconds, mib(peakDuringJob)))

    // The daemon's images and record against the engine's.
    var identicalPixels: Bool? = nil, identicalConfiguration: Bool? = nil
    var recorded: JSONValue? = nil
    if let rows = try d1.store?.images(jobID: e2e.jobId), rows.count == images {
        identicalPixels = try rows.allSatisfy { row in
            try ImageFile.read(path: row.path).image.pixels == before.pixels[row.index]
        }
        if let first = rows.first, case .object(let record)? = JSONValue.parse(first.record),
           case .object(let fields)? = record["fields"], case .string(let text)? = fields["sampling_configuration"] {
            recorded = JSONValue.parse(text)
            let decoded = try? JSONDecoder().decode(SamplingConfiguration.self, from: Data(text.utf8))
            identicalConfiguration = decoded == before.resolved
        }
    }
    if identicalPixels != true { notes.append("the daemon's images differ from the engine's (or could not be read)") }
    if identicalConfiguration != true { notes.append("the daemon's recorded sampling configuration differs from the engine's") }

    var warmRuns: [JobTiming] = []
    for i in 1...options.warmRepeats {
        let name = "bench-warm-\(i)"
        warmRuns.append(try d1.run(job: e2eJobYAML(name: name, images: warmImages, steps: warmSteps), name: name))
        log(String(format: "warm job %d: submit -> done %.2f s (run %.2f s)", i, warmRuns.last!.submitToDoneSeconds, warmRuns.last!.runSeconds))
    }
    d1.stop()

    // Run 2: every bundle preloaded.
    let all = ["fashion-mnist", "fashion-mnist-classifier", "fashion-mnist-features"]
    log("run 2: diffusiond with preload \(all)")
    let d2 = try DaemonUnderTest(bin: bin, root: root + "/run2", models: models, preload: all)
    defer { d2.stop() }
    let ready2 = try d2.waitReady()
    let loads2 = try d2.modelLoads()
    let memReady2 = d2.memory
    usleep(1_500_000)  // one heartbeat, which records the cached models
    let cached = d2.cachedModels()
    log(String(format: "READY=1 after %.2f s; RSS %.1f MiB with %@ cached", ready2, mib(memReady2?.rssKiB ?? 0), cached.joined(separator: ", ")))
    if Set(cached) != Set(all) { notes.append("run 2 cached \(cached) rather than all of \(all): see \(root)/run2/daemon.log") }
    let guidedYAML = """
        name: bench-guided
        model: fashion-mnist
        mode: classifier-guided
        images: \(warmImages)
        sampler:
          kind: ddpm
          steps: \(warmSteps)
          guidance_scale: 1.0
          classifier: fashion-mnist-classifier
        seed: \(e2eSeed)

        """
    var memGuided: ProcessMemory? = nil
    do {
        _ = try d2.run(job: guidedYAML, name: "bench-guided")
        memGuided = d2.memory
    } catch {
        notes.append("run 2 guided job: \(error)")
    }
    d2.stop()

    let after = try engine.run(batch: batch)
    log(String(format: "engine alone again: %.2f s", after.seconds))
    let engineMean = (before.seconds + after.seconds) / 2
    let result = DaemonResult(
        config: d1.configText,
        endToEnd: EndToEndResult(
            job: e2eJobYAML(name: "bench-e2e-\(images)", images: images, steps: steps),
            settings: "mode class-conditional; kind ddim, steps \(steps) (respacing ddim\(steps)), eta 0; classes i mod 10; png",
            images: images, seed: e2eSeed, batchSize: batch, samplingConfiguration: recorded, daemon: e2e,
            engineSeconds: [before.seconds, after.seconds], engineMeanSeconds: engineMean,
            overheadPercent: 100 * (e2e.submitToDoneSeconds / engineMean - 1),
            runOverheadPercent: 100 * (e2e.runSeconds / engineMean - 1),
            identicalPixels: identicalPixels, identicalConfiguration: identicalConfiguration),
        coldStart: ColdStart(preload: ["fashion-mnist"], readySeconds: ready1, modelLoads: loads1,
                             startWithoutLoadsSeconds: ready1 - loads1.reduce(0) { $0 + $1.loadSeconds }),
        coldStartAllBundles: ColdStart(preload: all, readySeconds: ready2, modelLoads: loads2,
                                       startWithoutLoadsSeconds: ready2 - loads2.reduce(0) { $0 + $1.loadSeconds }),
        warm: WarmJobResult(
            job: e2eJobYAML(name: "bench-warm-N", images: warmImages, steps: warmSteps),
            settings: "mode class-conditional; \(warmImages) images (one per class); kind ddim, steps \(warmSteps), eta 0",
            runs: warmRuns, medianSubmitToDoneSeconds: warmRuns.map(\.submitToDoneSeconds).sorted()[warmRuns.count / 2],
            engineSeconds: warmEngineRun.seconds),
        memory: MemoryResult(
            rssAfterReadyMib: mib(rssReady), peakRssDuringJobMib: mib(peakDuringJob), maxSampledRssDuringJobMib: mib(maxRss),
            allBundlesRssAfterReadyMib: mib(memReady2?.rssKiB ?? 0), allBundlesPeakAfterReadyMib: mib(memReady2?.peakKiB ?? 0),
            allBundlesRssAfterGuidedJobMib: memGuided.map { mib($0.rssKiB) }, allBundlesPeakAfterGuidedJobMib: memGuided.map { mib($0.peakKiB) },
            allBundlesCached: cached),
        notes: notes)
    log(String(format: "daemon overhead: %.1f %% end to end (submit -> done), %.1f %% claimed -> done, against the engine's %.2f s",
               result.endToEnd.overheadPercent, result.endToEnd.runOverheadPercent, engineMean))
    return result
}

/// Two engine runs of the 256-image job, the daemon's run of it, warm jobs and two starts.
func expectedDaemonSeconds(_ options: Options, calibration: SamplingCalibration) -> Double {
    let rate = calibration.unetRowsPerSecond
    let e2e = 256.0 * 50 / rate
    let warm = 64.0 * 25 / rate
    let guided = 64.0 * 25 / rate + 64.0 * 25 / calibration.classifierRowsPerSecond
    return 3 * e2e * 1.03 + Double(options.warmRepeats + 1) * (warm + 0.6) + guided + 2 * 4 + 5
}
