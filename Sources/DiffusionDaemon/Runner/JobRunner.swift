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
    /// How long a job waits before retrying a write that failed for lack of space.
    public let spaceRetryInterval: Duration

    public init(store: ProvenanceStore, generator: any ImageGenerator, config: DaemonConfig, spool: Spool, logger: Logger,
                spaceRetryInterval: Duration = .seconds(5)) {
        self.spaceRetryInterval = spaceRetryInterval
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
        let ext = spec.output.format.fileExtension
        return "\(spec.name)-\(String(format: "%05d", index)).\(ext)"
    }

    /// Makes the output folder agree with the image rows after a crash:
    /// temporaries are removed (also in view/); rows whose file is missing (or
    /// has another size), or whose viewing copy is missing, are deleted; image
    /// files and viewing copies without a row (renamed into place just before a
    /// crash, row never written) are deleted. The images concerned are then
    /// generated again, identically.
    public func reconcileOutputs(jobID: Int64, spec: JobSpec, directory: String) throws -> (removedFiles: [String], removedRows: [Int]) {
        let viewDir = directory + "/view"
        AtomicFile.removeTemporaries(in: directory)
        AtomicFile.removeTemporaries(in: viewDir)
        let rows = try store.images(jobID: jobID)
        var staleRows: [Int] = []
        var byName: [String: ImageRow] = [:]
        for row in rows {
            var st = stat()
            let name = (row.path as NSString).lastPathComponent
            if stat(row.path, &st) != 0 || Int(st.st_size) != row.byteSize
                || (spec.output.upscale > 1 && stat(viewDir + "/" + name, &st) != 0) {
                staleRows.append(row.index)
            } else {
                byName[name] = row
            }
        }
        try store.deleteImages(jobID: jobID, indices: staleRows)
        var removed: [String] = []
        let ext = spec.output.format.fileExtension
        for dir in [directory, viewDir] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            for name in names where name.hasPrefix(spec.name + "-") && name.hasSuffix("." + ext) && byName[name] == nil {
                if unlink(dir + "/" + name) == 0 { removed.append(dir == directory ? name : "view/" + name) }
            }
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
                var waitingSince: Date?
                while true {
                    do {
                        try write(image: image, job: job, spec: spec, modelHash: modelHash, directory: dir)
                        break
                    } catch let error where Self.isOutOfSpace(error) {
                        // A full disk is usually temporary: keep the image, wait, retry.
                        if let outcome = await waitForSpace(job: job, spec: spec, imageIndex: image.index, error: error,
                                                            since: &waitingSince, canceled: canceled) {
                            await abandon(ahead)
                            return outcome
                        }
                    } catch {
                        await abandon(ahead)
                        return finish(job: job, outcome: .failed, error: "cannot write image \(image.index): \(error)")
                    }
                }
                if let waitingSince {
                    logger.notice("disk space available again; job resumed", metadata: [
                        "job": "\(job.id)", "waited_seconds": "\(Int(Date().timeIntervalSince(waitingSince)))"])
                    activity.withLock { $0.status = "running job \(job.id) (\(spec.name))" }
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

    /// True for a write that failed because a file system is full (ENOSPC, EDQUOT, SQLITE_FULL).
    static func isOutOfSpace(_ error: any Error) -> Bool {
        if case let ImageCodecError.io(_, _, code)? = error as? ImageCodecError { return code == ENOSPC || code == EDQUOT }
        if let e = error as? POSIXError { return e.code == .ENOSPC || e.code == .EDQUOT }
        if let e = error as? CocoaError, e.code == .fileWriteOutOfSpace { return true }
        return ProvenanceStore.isOutOfSpace(error)
    }

    /// After a write failed for lack of space: nothing partial is visible (the
    /// image went to a hidden temporary that is removed; its row is written
    /// only after the file). Says why in the log and in the status, waits
    /// `spaceRetryInterval`, then lets the caller retry the same image. Returns
    /// an outcome instead when the job is canceled or the daemon stops meanwhile.
    func waitForSpace(job: JobRow, spec: JobSpec, imageIndex: Int, error: any Error, since: inout Date?,
                      canceled: Locked<Bool>) async -> JobOutcome? {
        let path = outputDirectory(job: job, spec: spec) + "/" + Self.imageFileName(spec: spec, index: imageIndex)
        let retry = Int(spaceRetryInterval.components.seconds)
        let reason = "no space left on device writing \(path) (\(error)); waiting for space, retrying every \(retry) s"
        if since == nil {
            since = Date()
            logger.error("disk full: the job waits for space", metadata: ["job": "\(job.id)", "image": "\(imageIndex)",
                                                                         "reason": "\(reason)"])
        } else if Int(Date().timeIntervalSince(since!)) % 60 < retry {
            logger.warning("still waiting for disk space", metadata: ["job": "\(job.id)", "reason": "\(reason)"])
        }
        activity.withLock { $0.status = "job \(job.id) (\(spec.name)) waiting: \(reason)" }
        let deadline = ContinuousClock.now + spaceRetryInterval
        while ContinuousClock.now < deadline {
            if canceled.current || (try? store.isCancelRequested(jobID: job.id)) == true {
                return finish(job: job, outcome: .canceled, error: nil)
            }
            if isStopping { return interrupt(job: job) }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return nil
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
        let format = spec.output.format
        let bytes = try ImageFile.encode(image.raster, format: format, quality: spec.output.quality ?? 95,
                                         record: EmbeddedRecord(json: json, parameters: record.parametersText))
        let path = directory + "/" + Self.imageFileName(spec: spec, index: image.index)
        try AtomicFile.write(bytes, to: path)
        // The viewing copy is part of the image: written before the row, so that a
        // crash or a full disk never leaves a recorded image without it.
        if spec.output.upscale > 1 {
            let view = Upscale.nearest(image.raster, factor: spec.output.upscale)
            let viewDir = directory + "/view"
            try FileManager.default.createDirectory(atPath: viewDir, withIntermediateDirectories: true)
            let viewBytes = try ImageFile.encode(view, format: format, quality: spec.output.quality ?? 95,
                                                 record: EmbeddedRecord(json: json, parameters: record.parametersText))
            try AtomicFile.write(viewBytes, to: viewDir + "/" + Self.imageFileName(spec: spec, index: image.index))
        }
        // The row is written only once the files are in place (and their directories synced).
        try store.recordImage(ImageRow(jobID: job.id, index: image.index, seed: image.seed, classIndex: cls?.index,
                                       className: cls?.name, path: path, format: format.rawValue, width: image.width,
                                       height: image.height, byteSize: bytes.count, sha256: SHA256Hex.of(bytes),
                                       record: json))
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
