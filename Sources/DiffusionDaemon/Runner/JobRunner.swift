import Foundation
import ImageCodecs
import Logging
import Provenance

/// How one run of a job ended.
public enum JobOutcome: String, Sendable, Equatable {
    case done, failed, canceled
    /// Stopped for a daemon shutdown; the job is pending again and resumes later.
    case interrupted
    /// Not run (someone else took it, poison or canceled before start).
    case skipped
}

/// Runs jobs from the queue: for each batch of image indices not yet
/// recorded, generate, write each image atomically, then record its row.
///
/// Construct one per daemon:
/// ```swift
/// let runner = JobRunner(store: store, generator: myEngine, config: config, spool: spool, logger: logger)
/// await runner.runAvailableJobs()
/// ```
public final class JobRunner: Sendable {
    public let store: ProvenanceStore
    public let generator: any ImageGenerator
    public let spool: Spool
    let config: Locked<DaemonConfig>
    let logger: Logger
    /// What is happening now (read by the heartbeat).
    public let activity = Locked(DaemonActivity())
    let stopRequested = Locked(false)
    let environmentID = Locked<Int64?>(nil)
    let host: String
    /// Measures finished jobs (metrics.json and metric rows).
    let quality = JobQualityMeter()

    public init(store: ProvenanceStore, generator: any ImageGenerator, config: DaemonConfig, spool: Spool, logger: Logger) {
        self.store = store
        self.generator = generator
        self.config = Locked(config)
        self.spool = spool
        self.logger = logger
        self.host = ProcessInfo.processInfo.hostName
    }

    /// Applies a reloaded config (batch size, limits, threads take effect at the next batch).
    public func update(config: DaemonConfig) { self.config.set(config) }

    /// Asks the runner to stop at the next batch boundary (graceful shutdown).
    public func requestStop() { stopRequested.set(true) }
    public var isStopping: Bool { stopRequested.current }

    /// Records the environment row that new jobs will point to.
    @discardableResult
    public func recordEnvironment() throws -> Int64 {
        let env = generator.environment
        let cfg = config.current
        var versions = env.kernelVersions
        for (k, v) in ImageFile.libraryVersions { versions[k] = v }
        let id = try store.recordEnvironment(EnvironmentRow(
            version: DaemonVersion.string, host: host, kernel: env.kernel, kernelVersions: versions,
            threads: cfg.threads, details: env.details.merging(["precision": env.precision,
                                                                "os": ProcessInfo.processInfo.operatingSystemVersionString]) { a, _ in a }))
        environmentID.set(id)
        return id
    }

    /// Runs queued jobs until the queue is empty or a stop is requested; returns how many ran.
    @discardableResult
    public func runAvailableJobs() async -> Int {
        var ran = 0
        while !isStopping {
            let maxAttempts = config.current.limits.attempts
            let outcome: ClaimOutcome?
            do {
                outcome = try store.claimNext(maxAttempts: maxAttempts, environmentID: environmentID.current)
            } catch {
                logger.error("cannot claim the next job", metadata: ["error": "\(error)"])
                return ran
            }
            guard let outcome else { return ran }
            switch outcome {
            case let .claimed(job):
                _ = await run(job: job)
                ran += 1
            case let .poisoned(job):
                logger.error("poison job failed", metadata: ["job": "\(job.id)", "attempts": "\(job.attempts)"])
                _ = try? spool.fail(spoolName: job.spoolName, error: job.error ?? "poison job")
            case let .canceled(job):
                _ = try? spool.fail(spoolName: job.spoolName, error: "canceled by user before it started")
            case .notPending:
                continue
            }
        }
        return ran
    }

    /// The output folder of a job.
    public func outputDirectory(job: JobRow, spec: JobSpec) -> String {
        config.current.output + "/\(job.id)-\(spec.name)"
    }

    /// The file name of image `index`.
    public static func imageFileName(spec: JobSpec, index: Int) -> String {
        let ext = ImageFormat(rawValue: spec.output.format)?.fileExtension ?? "png"
        return "\(spec.name)-\(String(format: "%05d", index)).\(ext)"
    }

    /// Makes the output folder agree with the image rows after a crash:
    /// temporaries are removed; rows whose file is missing (or has another
    /// size) are deleted; image files without a row (renamed into place just
    /// before a crash, row never written) are deleted. The images concerned are
    /// then generated again, identically.
    public func reconcileOutputs(jobID: Int64, spec: JobSpec, directory: String) throws -> (removedFiles: [String], removedRows: [Int]) {
        AtomicFile.removeTemporaries(in: directory)
        let rows = try store.images(jobID: jobID)
        var staleRows: [Int] = []
        var byName: [String: ImageRow] = [:]
        for row in rows {
            var st = stat()
            if stat(row.path, &st) != 0 || Int(st.st_size) != row.byteSize {
                staleRows.append(row.index)
            } else {
                byName[(row.path as NSString).lastPathComponent] = row
            }
        }
        try store.deleteImages(jobID: jobID, indices: staleRows)
        var removed: [String] = []
        let ext = ImageFormat(rawValue: spec.output.format)?.fileExtension ?? "png"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(spec.name + "-") && name.hasSuffix("." + ext) && byName[name] == nil {
            if unlink(directory + "/" + name) == 0 { removed.append(name) }
        }
        if !removed.isEmpty || !staleRows.isEmpty {
            try? AtomicFile.syncDirectory(directory)
            logger.notice("reconciled job outputs", metadata: ["job": "\(jobID)", "files_removed": "\(removed.count)",
                                                              "rows_removed": "\(staleRows.count)"])
        }
        return (removed, staleRows)
    }

    /// Runs one claimed (active) job to its end, a cancel, or a stop.
    public func run(job: JobRow) async -> JobOutcome {
        guard let text = job.spec, let spec = try? JobSpec.fromJSON(text) else {
            return finish(job: job, outcome: .failed, error: "stored job spec is unreadable")
        }
        let cfg = config.current
        let dir = outputDirectory(job: job, spec: spec)
        let started = Date().timeIntervalSince1970
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try store.setOutput(jobID: job.id, outputDir: dir, totalImages: spec.totalImages)
            _ = try reconcileOutputs(jobID: job.id, spec: spec, directory: dir)
        } catch {
            return finish(job: job, outcome: .failed, error: "cannot prepare output folder \(dir): \(error)")
        }
        let missing: [Int]
        do {
            missing = try store.unrecordedIndices(jobID: job.id, total: spec.totalImages)
        } catch {
            return finish(job: job, outcome: .failed, error: "cannot read recorded images: \(error)")
        }
        activity.withLock {
            $0.status = "running job \(job.id) (\(spec.name))"
            $0.activeJobID = job.id
            $0.imagesTotal = spec.totalImages
            $0.imagesDone = spec.totalImages - missing.count
            $0.imagesThisRun = 0
            $0.runStarted = started
        }
        defer {
            activity.withLock {
                $0.status = "idle"
                $0.activeJobID = nil
                $0.imagesDone = 0
                $0.imagesTotal = 0
                $0.imagesThisRun = 0
            }
        }
        logger.info("job started", metadata: ["job": "\(job.id)", "name": "\(spec.name)", "attempt": "\(job.attempts)",
                                              "images": "\(spec.totalImages)", "remaining": "\(missing.count)"])

        let modelHash: String
        do {
            for name in [spec.model] + (spec.sampler.classifier.map { [$0] } ?? []) {
                if let loaded = try await generator.preload(model: name) {
                    try? store.recordModelLoad(ModelLoadRow(name: loaded.name, contentHash: loaded.contentHash,
                                                            loadSeconds: loaded.loadSeconds, bytes: loaded.bytes))
                    logger.info("model loaded", metadata: ["model": "\(name)", "seconds": "\(loaded.loadSeconds)"])
                }
            }
            modelHash = try await generator.modelHash(spec.model)
        } catch {
            return finish(job: job, outcome: .failed, error: "cannot load model \(spec.model): \(error)")
        }

        // A cancel flag polled from the database while the job runs.
        let canceled = Locked(false)
        let poller = Task { [store] in
            while !Task.isCancelled {
                if (try? store.isCancelRequested(jobID: job.id)) == true { canceled.set(true); return }
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        defer { poller.cancel() }
        let stop = stopRequested
        // Set when the job ends while a batch is still being sampled ahead, which then stops at its next step.
        let abandoned = Locked(false)
        let context = GenerationContext(progress: { _ in }, shouldStop: { canceled.current || stop.current || abandoned.current },
                                        threads: cfg.threads)
        let generator = self.generator
        func nextBatch(from start: Int) -> [Int] {
            Array(missing[start ..< min(start + max(1, config.current.batchSize), missing.count)])
        }
        func sample(_ batch: [Int]) -> Task<[GeneratedImage], any Error> {
            Task { try await generator.generate(job: spec, indices: batch, context: context) }
        }
        func abandon(_ ahead: (batch: [Int], task: Task<[GeneratedImage], any Error>)?) async {
            guard let ahead else { return }
            abandoned.set(true)
            _ = try? await ahead.task.value
        }

        // The next batch is sampled (on the generator's compute thread) while this batch's files are
        // written and recorded, so the fsyncs of the writes do not hold up sampling. Each image's
        // file and row are written exactly as before; a cancel or a stop still ends the job between
        // batches (the batch sampled ahead is then dropped, never written).
        var ahead: (batch: [Int], task: Task<[GeneratedImage], any Error>)? = nil
        var index = 0
        while index < missing.count {
            if canceled.current || (try? store.isCancelRequested(jobID: job.id)) == true {
                await abandon(ahead)
                return finish(job: job, outcome: .canceled, error: nil)
            }
            if isStopping {
                await abandon(ahead)
                return interrupt(job: job)
            }
            let current = ahead ?? { let b = nextBatch(from: index); return (b, sample(b)) }()
            ahead = nil
            let batch = current.batch
            let images: [GeneratedImage]
            do {
                images = try await current.task.value
            } catch is CancellationError {
                if canceled.current { return finish(job: job, outcome: .canceled, error: nil) }
                return interrupt(job: job)
            } catch {
                if isStopping { return interrupt(job: job) }
                return finish(job: job, outcome: .failed, error: "generation failed: \(error)")
            }
            guard images.map(\.index) == batch else {
                return finish(job: job, outcome: .failed, error: "generator returned indices \(images.map(\.index)) for \(batch)")
            }
            let following = index + batch.count
            if following < missing.count && !canceled.current && !isStopping {
                let b = nextBatch(from: following)
                ahead = (b, sample(b))
            }
            for image in images {
                do {
                    try write(image: image, job: job, spec: spec, modelHash: modelHash, directory: dir)
                } catch {
                    await abandon(ahead)
                    return finish(job: job, outcome: .failed, error: "cannot write image \(image.index): \(error)")
                }
                activity.withLock {
                    $0.imagesDone += 1
                    $0.imagesThisRun += 1
                }
            }
            index = following
        }
        await finishOutputs(job: job, spec: spec, directory: dir, started: started)
        return finish(job: job, outcome: .done, error: nil)
    }

    func write(image: GeneratedImage, job: JobRow, spec: JobSpec, modelHash: String, directory: String) throws {
        guard image.width > 0, image.height > 0, image.channels == 1 || image.channels == 3,
              image.pixels.count == image.width * image.height * image.channels else {
            throw ImageCodecError.invalidArgument("image \(image.index) has an invalid geometry")
        }
        let env = generator.environment
        let cls = image.classIndex.flatMap { ci in spec.classes.first { $0.index == ci } }
            ?? image.classIndex.map { ClassRef(index: $0, name: "class \($0)") }
        let createdAt = ISO8601DateFormatter().string(from: Date())
        let record = GenerationRecord(
            job: .init(id: job.id, name: spec.name, fileSHA256: job.contentSHA256), index: image.index, seed: image.seed,
            seedDerivation: image.recordFields["seed_derivation"] ?? JobSpec.seedDerivation, classRef: cls,
            model: .init(name: spec.model, hash: modelHash), spec: spec,
            software: .init(name: "diffusiond", version: DaemonVersion.string, host: host, kernel: env.kernel,
                            kernelVersions: env.kernelVersions, precision: env.precision, threads: config.current.threads),
            fields: image.recordFields, createdAt: createdAt)
        let json = record.jsonString()
        let format = ImageFormat(rawValue: spec.output.format) ?? .png
        let bytes = try ImageFile.encode(image.raster, format: format, quality: spec.output.quality ?? 95,
                                         record: EmbeddedRecord(json: json, parameters: record.parametersText))
        let path = directory + "/" + Self.imageFileName(spec: spec, index: image.index)
        try AtomicFile.write(bytes, to: path)
        // The row is written only once the file is in place (and its directory synced).
        try store.recordImage(ImageRow(jobID: job.id, index: image.index, seed: image.seed, classIndex: cls?.index,
                                       className: cls?.name, path: path, format: format.rawValue, width: image.width,
                                       height: image.height, byteSize: bytes.count, sha256: SHA256Hex.of(bytes),
                                       record: json))
        if spec.output.upscale > 1 {
            let view = Upscale.nearest(image.raster, factor: spec.output.upscale)
            let viewDir = directory + "/view"
            try? FileManager.default.createDirectory(atPath: viewDir, withIntermediateDirectories: true)
            if let viewBytes = try? ImageFile.encode(view, format: format, quality: spec.output.quality ?? 95,
                                                     record: EmbeddedRecord(json: json, parameters: record.parametersText)) {
                try? AtomicFile.write(viewBytes, to: viewDir + "/" + Self.imageFileName(spec: spec, index: image.index))
            }
        }
    }

    /// Contact sheet, then the job's metrics, once every image is recorded.
    func finishOutputs(job: JobRow, spec: JobSpec, directory: String, started: Double) async {
        guard let rows = try? store.images(jobID: job.id) else { return }
        var images: [RasterImage] = []
        for row in rows.prefix(1024) {
            if let decoded = try? ImageFile.read(path: row.path) { images.append(decoded.image) }
        }
        let columns = spec.imagesPerClass ?? max(1, Int(Double(images.count).squareRoot().rounded(.up)))
        let sheet = Upscale.nearest(ContactSheet.make(images, columns: min(columns, 64), padding: 2), factor: max(1, spec.output.upscale))
        if let bytes = try? PNGCodec.encode(sheet, record: EmbeddedRecord(json: nil, parameters: "contact sheet of job \(job.id) \(spec.name)")) {
            try? AtomicFile.write(bytes, to: directory + "/contact-sheet.png")
        }
        let cfg = config.current
        guard cfg.metrics.enabled else { return }
        let wall = Date().timeIntervalSince1970 - started
        activity.withLock { $0.status = "measuring job \(job.id) (\(spec.name)): metrics of \(rows.count) images" }
        var metricRows = [MetricRow(jobID: job.id, name: "run_seconds", value: wall, n: rows.count)]
        do {
            let report = try await quality.measure(images: rows, config: cfg)
            let json = try report.jsonData()
            try AtomicFile.write([UInt8](json), to: directory + "/metrics.json")
            metricRows += JobQualityMeter.rows(jobID: job.id, report: report, reportJSON: String(decoding: json, as: UTF8.self))
            logger.info("job measured", metadata: [
                "job": "\(job.id)", "n": "\(report.n)", "fid": "\(report.fid.map { String(format: "%.4f", $0.value) } ?? "omitted")",
                "kid": "\(report.kid.map { String(format: "%.5f", $0.mean) } ?? "omitted")",
                "class_accuracy": "\(report.classAccuracy.map { String(format: "%.3f", $0.value) } ?? "-")",
                "seconds": "\(String(format: "%.2f", report.seconds))"])
        } catch {
            // Metrics never fail a job whose images are safely written: the reason is recorded instead.
            logger.warning("job metrics unavailable", metadata: ["job": "\(job.id)", "error": "\(error)"])
            let reason = "metrics unavailable: \(error)"
            let body = (try? JSONSerialization.data(withJSONObject: ["n": rows.count, "error": reason], options: [.prettyPrinted, .sortedKeys])) ?? Data()
            try? AtomicFile.write([UInt8](body), to: directory + "/metrics.json")
            metricRows.append(MetricRow(jobID: job.id, name: "metrics_error", value: 0, n: rows.count,
                                        details: String(decoding: (try? JSONSerialization.data(withJSONObject: ["error": reason])) ?? Data(), as: UTF8.self)))
        }
        do { try store.replaceMetrics(jobID: job.id, with: metricRows) } catch {
            logger.error("cannot record job metrics", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
    }

    func interrupt(job: JobRow) -> JobOutcome {
        logger.notice("job interrupted by shutdown; it resumes at the next start", metadata: ["job": "\(job.id)"])
        do {
            try store.requeue(jobID: job.id, reason: "daemon shutting down", refundAttempt: true)
        } catch {
            logger.error("cannot requeue job", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
        return .interrupted
    }

    func finish(job: JobRow, outcome: JobOutcome, error: String?) -> JobOutcome {
        do {
            switch outcome {
            case .done:
                try store.transition(jobID: job.id, to: .done, reason: "all images written")
                _ = try? spool.finish(spoolName: job.spoolName)
                logger.info("job done", metadata: ["job": "\(job.id)"])
            case .canceled:
                try store.transition(jobID: job.id, to: .canceled, reason: "canceled by user")
                _ = try? spool.fail(spoolName: job.spoolName, error: "canceled by user")
                logger.notice("job canceled", metadata: ["job": "\(job.id)"])
            case .failed:
                try store.transition(jobID: job.id, to: .failed, reason: error, error: error)
                _ = try? spool.fail(spoolName: job.spoolName, error: error ?? "failed")
                logger.error("job failed", metadata: ["job": "\(job.id)", "error": "\(error ?? "")"])
            case .interrupted, .skipped:
                break
            }
        } catch {
            logger.error("cannot record job outcome", metadata: ["job": "\(job.id)", "error": "\(error)"])
        }
        return outcome
    }
}
