import DiffusionControl
import DiffusionDaemon
import Digests
import Foundation
import ImageCodecs
import Metrics
import Provenance
import Testing

/// Per-job metrics written by the real daemon, and `diffusionctl metrics` / `reference-stats` as
/// real processes.
@Suite(.serialized) struct JobMetricsTests {
    @Test(.enabled(if: FileManager.default.fileExists(atPath: packageRoot + "/models/fashion-mnist-features/model.json")))
    func engineJobWritesMetricsJSONAndRows() throws {
        let h = try DaemonHarness(delayMs: 0, engine: true, batchSize: 64)
        try h.start()
        try h.drop("measured.yml", """
        name: measured
        classes: [Trouser, Bag]
        images_per_class: 12
        sampler: {kind: ddpm, steps: 10}
        seed: 5
        """)
        // The second job once the first is claimed, so that the ids follow (two renames within one
        // tick of the kernel's coarse clock, before the watch exists, would fall back to name order).
        try h.waitFor("the first job's claim", timeout: 60) { (try? h.store().job(id: 1)) != nil }
        try h.drop("guided.yml", """
        name: guided
        mode: classifier-guided
        classes: [Bag]
        images: 8
        sampler: {kind: ddim, steps: 5, guidance_scale: 1.5}
        seed: 5
        """)
        try h.waitFor("the jobs", timeout: 300) { h.exists("spool/done/measured.yml") && h.exists("spool/done/guided.yml") }
        #expect(h.signal(SIGTERM) == 0)
        let store = try h.store()
        // Every bundle a job used is named with its content hash (the SHA-256 of its model.json),
        // in the job's rows and, for the networks that made them, in each image's record.
        func bundleHash(_ name: String) throws -> String {
            SHA256Hex.of(try FileBytes.read(path: packageRoot + "/models/\(name)/model.json"))
        }
        let (unet, classifier, features) = (try bundleHash("fashion-mnist"), try bundleHash("fashion-mnist-classifier"),
                                            try bundleHash("fashion-mnist-features"))
        let models1 = try store.jobModels(jobID: 1).map { "\($0.role.rawValue) \($0.name) \($0.sha256)" }
        #expect(models1 == ["unet fashion-mnist \(unet)", "features fashion-mnist-features \(features)"], "\(models1)")
        #expect(try store.jobModels(jobID: 2).map { "\($0.role.rawValue) \($0.name) \($0.sha256)" }
                == ["unet fashion-mnist \(unet)", "classifier fashion-mnist-classifier \(classifier)",
                    "features fashion-mnist-features \(features)"])
        for image in try store.images(jobID: 2) {
            let record = try GenerationRecord.parse(image.record)
            #expect(record.model.hash == unet && record.classifier?.hash == classifier && record.classifier?.name == "fashion-mnist-classifier")
            let embedded = try #require(try ImageFile.read(path: image.path).record.json)
            #expect(try GenerationRecord.parse(embedded).classifier?.hash == classifier)
        }
        #expect(try store.images(jobID: 1).allSatisfy { (try? GenerationRecord.parse($0.record).classifier) == .some(nil) })
        let show = try diffusionctl(["show", "2", "--config", h.root + "/config.yml"])
        #expect(show.output.contains("classifier: fashion-mnist-classifier (sha256 \(classifier))"), "\(show.output.prefix(600))")
        #expect(show.output.contains("cpu: \(CPUDescription.current.model), caches \(CPUDescription.current.cacheSummary); flags "),
                "\(show.output.suffix(600))")
        let job = try #require(try store.job(id: 1))
        let dir = try #require(job.outputDir)
        // metrics.json: KID, precision/recall, class accuracy; FID omitted at N = 24 with its reason.
        let report = try JSONDecoder().decode(QualityReport.self, from: try Data(contentsOf: URL(fileURLWithPath: dir + "/metrics.json")))
        #expect(report.n == 24 && report.fid == nil)
        #expect(report.omitted["fid"]?.contains("N = 24 is below the minimum of 500") == true)
        #expect(report.classAccuracy?.n == 24 && report.perClass.map(\.index) == [1, 8] && report.perClass.map(\.n) == [12, 12])
        #expect(report.kid?.subsetSize == 24 && report.precisionRecall?.referenceN == 24)
        #expect(report.predictedClassCounts.reduce(0, +) == 24)
        // The database holds the same numbers.
        let rows = Dictionary(try store.metrics(jobID: 1).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(Set(rows.keys).isSuperset(of: ["quality", "run_seconds", "kid", "precision", "recall", "class_accuracy", "class_accuracy/1", "class_accuracy/8"]))
        #expect(rows["fid"] == nil)
        #expect(rows["kid"]?.value == report.kid?.mean && rows["class_accuracy"]?.value == report.classAccuracy?.value)
        // The same folder measured on demand gives the same numbers (classes from the embedded records).
        let ctl = try diffusionctl(["metrics", dir, "--config", h.root + "/config.yml", "--json"])
        #expect(ctl.status == 0, "\(ctl.error)")
        let again = try JSONDecoder().decode(QualityReport.self, from: Data(ctl.output.utf8))
        #expect(again.kid == report.kid && again.precisionRecall == report.precisionRecall && again.classAccuracy == report.classAccuracy)
        // ... and by job id, with the text output naming the omission.
        let text = try diffusionctl(["metrics", "1", "--config", h.root + "/config.yml"])
        #expect(text.status == 0 && text.output.contains("FID              omitted: N = 24 is below the minimum of 500"))
        #expect(text.output.contains("KID") && text.output.contains("class accuracy"))
        // A job that cannot be found is a clear error.
        let missing = try diffusionctl(["metrics", "no-such-job", "--config", h.root + "/config.yml"])
        #expect(missing.status != 0 && missing.error.contains("'no-such-job' is neither a folder nor a job id or name"))
    }

    /// Metrics never fail a job: without a features bundle the job is done and the reason recorded.
    @Test func missingFeaturesBundleIsRecordedNotFatal() throws {
        let h = try DaemonHarness(delayMs: 0)
        try h.start()
        try h.drop("plain.yml", "name: plain\nclasses: [Trouser]\nimages_per_class: 3\nsampler: {kind: ddim, steps: 2}\n")
        try h.waitFor("the job", timeout: 60) { h.exists("spool/done/plain.yml") }
        #expect(h.signal(SIGTERM) == 0)
        let rows = try h.store().metrics(jobID: 1)
        let error = try #require(rows.first { $0.name == "metrics_error" })
        #expect(error.details.contains("fashion-mnist-features") && error.n == 3)
        let dir = try #require(try h.store().job(id: 1)?.outputDir)
        #expect(try String(contentsOfFile: dir + "/metrics.json", encoding: .utf8).contains("metrics unavailable"))
    }

    /// `reference-stats` from IDX files (images, labels, held-out floor set), then `metrics --reference`:
    /// real test images measured against a reference built from other test images sit near its floor.
    @Test func referenceStatsFromIDXFiles() throws {
        let root = makeTempDir("refstats")
        let images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", labels = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
        try "models: \(packageRoot)/models\nstate: \(root)/state\n".write(toFile: root + "/config.yml", atomically: true, encoding: .utf8)
        let built = try diffusionctl(["reference-stats", images, "--labels", labels, "--floor", images, "--floor-labels", labels,
                                      "--name", "t10k", "--config", root + "/config.yml", "--json"])
        #expect(built.status == 0, "\(built.error)")
        #expect(built.output.contains("\"images\" : 10000") && built.output.contains("\"sample\" : 10000"))
        let reference = try ReferenceSet(contentsOf: URL(fileURLWithPath: root + "/state/references/t10k.safetensors"))
        #expect(reference.classes.count == 10 && reference.all.count == 10000 && reference.floor?.features.count == 10000)
        // Its statistics are those of the images' features: the bundle's PyTorch floor features give the same mean.
        let bundle = try ReferenceSet(bundle: try ModelBundleLoader.features(config: try DaemonConfig.load(path: root + "/config.yml"), name: nil))
        let stored = try FeatureStatistics(bundle.floor!.features)
        let worst = zip(reference.all.mean, stored.mean).map { abs($0 - $1) }.max()!
        #expect(worst < 1e-4, "mean differs by \(worst)")
        // A folder of those images measured against it: KID ~ 0. An unknown reference is a clear error.
        let unknown = try diffusionctl(["metrics", packageRoot + "/Tests/Fixtures/metrics/images", "--reference", "nope", "--config", root + "/config.yml"])
        #expect(unknown.status != 0 && unknown.error.contains("no reference 'nope'") && unknown.error.contains("known: t10k"))
        let measured = try diffusionctl(["metrics", packageRoot + "/Tests/Fixtures/metrics/images", "--reference", "t10k", "--config", root + "/config.yml", "--json"])
        #expect(measured.status == 0, "\(measured.error)")
        let report = try JSONDecoder().decode(QualityReport.self, from: Data(measured.output.utf8))
        #expect(report.n == 36 && report.reference == "t10k" && report.fid == nil)
    }
}
