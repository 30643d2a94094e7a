import Foundation
import ImageCodecs
import Provenance

/// The execution of one claim's batches: prefetch of the next batch, cancel, stop, the disk-full
/// wait, an unreachable store, a lost lease.
extension JobRunner {
    /// Samples and writes the images `missing` of a prepared claim, batch by batch. Returns nil once
    /// every image is written, or the outcome that ended the run early (already recorded).
    func runBatches(claim: ShardClaim, spec: JobSpec, missing: [Int], models: JobModels, directory dir: String) async -> JobOutcome? {
        let job = claim.job
        let cfg = config.current
        let lease = self.lease
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
        let activity = self.activity
        let context = GenerationContext(shouldStop: { canceled.current || stop.current || abandoned.current || !lease.isHeld },
                                        threads: cfg.threads, progress: { step in activity.withLock { $0.record(step) } })
        let generator = self.generator
        func nextBatch(from start: Int) -> [Int] {
            Array(missing[start ..< min(start + max(1, config.current.batchSize), missing.count)])
        }
        func sample(_ batch: [Int]) -> Task<[GeneratedImage], any Error> {
            if let ready = takePresampled(jobID: job.id, indices: batch) { return Task { ready } }
            return Task { try await generator.generate(job: spec, indices: batch, context: context) }
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
                return finisher.finish(claim, outcome: .canceled, error: nil)
            }
            if isStopping {
                await abandon(ahead)
                return finisher.interrupt(claim)
            }
            if !lease.isHeld {
                await abandon(ahead)
                return finisher.end(claim, error: LeaseLost(claim), failing: "")
            }
            let current = ahead ?? { let b = nextBatch(from: index); return (b, sample(b)) }()
            ahead = nil
            let batch = current.batch
            let images: [GeneratedImage]
            do {
                images = try await current.task.value
            } catch is CancellationError {
                if !lease.isHeld { return finisher.end(claim, error: LeaseLost(claim), failing: "") }
                if canceled.current { return finisher.finish(claim, outcome: .canceled, error: nil) }
                return finisher.interrupt(claim)
            } catch {
                if isStopping { return finisher.interrupt(claim) }
                return finisher.finish(claim, outcome: .failed, error: "generation failed: \(error)")
            }
            guard images.map(\.index) == batch else {
                return finisher.finish(claim, outcome: .failed, error: "generator returned indices \(images.map(\.index)) for \(batch)")
            }
            let following = index + batch.count
            if following < missing.count && !canceled.current && !isStopping {
                let b = nextBatch(from: following)
                ahead = (b, sample(b))
            }
            for image in images {
                var waitingSince: Date?
                var unreachableSince: ContinuousClock.Instant?
                while true {
                    do {
                        try writer.write(image: image, claim: claim, spec: spec, models: models, directory: dir,
                                         threads: config.current.threads, lease: lease)
                        break
                    } catch let error as LeaseLost {
                        await abandon(ahead)
                        return finisher.end(claim, error: error, failing: "")
                    } catch let error where store.isUnavailable(error) {
                        // The file is in place; its row waits for the store (a restart, a cut network)
                        // as long as the lease holds locally, then the shard is another worker's.
                        if unreachableSince == nil {
                            unreachableSince = .now
                            logger.warning("store unreachable; the image's row waits", metadata: [
                                "job": "\(job.id)", "image": "\(image.index)", "error": "\(error)"])
                        }
                        if !lease.isHeld || isStopping {
                            await abandon(ahead)
                            return finisher.end(claim, error: lease.isHeld ? error : LeaseLost(claim), failing: "")
                        }
                        try? await Task.sleep(for: .milliseconds(500))
                    } catch let error where writeFault(error) != nil {
                        // A full disk, a folder made read-only or removed: usually fixed by someone. Keep
                        // the image, say why, wait, retry (a removed folder is made again; the images
                        // recorded in it are made again at the end of the job).
                        if let outcome = await waitForWrite(claim: claim, spec: spec, imageIndex: image.index, error: error,
                                                            since: &waitingSince, canceled: canceled) {
                            await abandon(ahead)
                            return outcome
                        }
                        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                    } catch {
                        await abandon(ahead)
                        return finisher.finish(claim, outcome: .failed, error: "cannot write image \(image.index): \(error)")
                    }
                }
                if let waitingSince {
                    logger.notice("output writable again; job resumed", metadata: [
                        "job": "\(job.id)", "waited_seconds": "\(Int(Date().timeIntervalSince(waitingSince)))"])
                    activity.withLock { $0.status = "running job \(job.id) (\(spec.name))" }
                }
                activity.withLock { $0.recordImage() }
            }
            index = following
        }
        return nil
    }

    /// What went wrong, for a write that failed in a way someone can fix while the job waits:
    /// a full file system (ENOSPC, EDQUOT, SQLITE_FULL), a permission (EACCES, EPERM: a folder
    /// made read-only or immutable), a read-only file system (EROFS), a missing folder (ENOENT).
    /// Nil for any other error, which fails the job.
    func writeFault(_ error: any Error) -> WriteFault? { WriteFault(error, store: store) }

    /// After a write failed with a `WriteFault`: nothing partial is visible (the
    /// image went to a hidden temporary that is removed; its row is written
    /// only after the file). Says why in the log and in the status, waits
    /// `spaceRetryInterval`, then lets the caller retry the same image. Returns
    /// an outcome instead when the job is canceled or the daemon stops meanwhile.
    func waitForWrite(claim: ShardClaim, spec: JobSpec, imageIndex: Int, error: any Error, since: inout Date?,
                      canceled: Locked<Bool>) async -> JobOutcome? {
        let job = claim.job
        let path = outputDirectory(job: job, spec: spec) + "/" + Self.imageFileName(spec: spec, index: imageIndex)
        let retry = Int(spaceRetryInterval.components.seconds)
        let fault = writeFault(error) ?? .noSpace
        let reason = "\(fault.rawValue) writing \(path) (\(error)); \(fault.remedy), retrying every \(retry) s"
        if since == nil {
            since = Date()
            logger.error("\(fault.rawValue): the job waits", metadata: ["job": "\(job.id)", "image": "\(imageIndex)",
                                                                       "reason": "\(reason)"])
        } else if Int(Date().timeIntervalSince(since!)) % 60 < retry {
            logger.warning("still waiting to write", metadata: ["job": "\(job.id)", "reason": "\(reason)"])
        }
        activity.withLock { $0.status = "job \(job.id) (\(spec.name)) waiting: \(reason)" }
        let deadline = ContinuousClock.now + spaceRetryInterval
        while ContinuousClock.now < deadline {
            if canceled.current || (try? store.isCancelRequested(jobID: job.id)) == true {
                return finisher.finish(claim, outcome: .canceled, error: nil)
            }
            if isStopping { return finisher.interrupt(claim) }
            if !lease.isHeld { return finisher.end(claim, error: LeaseLost(claim), failing: "") }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return nil
    }
}

/// A write error someone can fix while the job waits (see `JobRunner.writeFault`).
public enum WriteFault: String, Sendable {
    case noSpace = "no space left on device"
    case permission = "permission denied"
    case readOnly = "read-only file system"
    case missingFolder = "the output folder is missing"

    /// What the job waits for, as the status line says it.
    var remedy: String {
        switch self {
        case .noSpace: return "waiting for space"
        case .permission, .readOnly: return "waiting until the output folder is writable"
        case .missingFolder: return "making it again"
        }
    }

    init?(_ error: any Error, store: any JobStore) {
        var code: Int32?
        if case let ImageCodecError.io(_, _, c)? = error as? ImageCodecError { code = c }
        if let e = error as? POSIXError { code = e.code.rawValue }
        if let e = error as? CocoaError {
            switch e.code {
            case .fileWriteOutOfSpace: code = ENOSPC
            case .fileWriteNoPermission: code = EACCES
            case .fileWriteVolumeReadOnly: code = EROFS
            case .fileNoSuchFile: code = ENOENT
            default: break
            }
        }
        switch code {
        case ENOSPC?, EDQUOT?: self = .noSpace
        case EACCES?, EPERM?: self = .permission
        case EROFS?: self = .readOnly
        case ENOENT?: self = .missingFolder
        default:
            guard store.isOutOfSpace(error) else { return nil }
            self = .noSpace
        }
    }
}
