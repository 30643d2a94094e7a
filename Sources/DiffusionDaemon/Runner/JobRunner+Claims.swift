import Foundation
import Provenance

/// A claim's models, its store calls through a store that may be unreachable for a while, and its end.
extension JobRunner {
    /// Runs `body` (store calls and file work), again every half second while the store is
    /// unreachable (a restarting server, a cut network) and the lease still holds; throws
    /// `LeaseLost` once it does not.
    func storeCall<T>(_ claim: ShardClaim, _ body: () throws -> T) async throws -> T {
        var since: ContinuousClock.Instant?
        while true {
            do {
                let value = try body()
                if since != nil { logger.notice("store reachable again", metadata: ["job": "\(claim.job.id)"]) }
                return value
            } catch where store.isUnavailable(error) {
                if since == nil {
                    since = .now
                    logger.warning("store unreachable; trying again while the lease holds", metadata: [
                        "job": "\(claim.job.id)", "shard": "\(claim.shard)", "error": "\(error)"])
                }
                guard lease.isHeld else { throw LeaseLost(claim) }
                if isStopping { throw error }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    /// Loads the job's models into the generator's cache, recording the loads.
    func loadModels(for spec: JobSpec) async throws {
        for name in [spec.model] + (spec.sampler.classifier.map { [$0] } ?? []) {
            if let loaded = try await generator.preload(model: name) {
                try? store.recordModelLoad(ModelLoadRow(name: loaded.name, contentHash: loaded.contentHash,
                                                        loadSeconds: loaded.loadSeconds, bytes: loaded.bytes))
                logger.info("model loaded", metadata: ["model": "\(name)", "seconds": "\(loaded.loadSeconds)"])
            }
        }
    }

    /// Loads the job's models (recording the loads) and records which bundles the job uses.
    func prepareModels(job: JobRow, spec: JobSpec) async throws -> JobModels {
        try await loadModels(for: spec)
        var classifier: GenerationRecord.ModelRef?
        if let name = spec.sampler.classifier, spec.mode == .classifierGuided {
            classifier = .init(name: name, hash: try await generator.modelHash(name))
        }
        let models = JobModels(unet: .init(name: spec.model, hash: try await generator.modelHash(spec.model)), classifier: classifier)
        try store.recordJobModel(JobModelRow(jobID: job.id, role: .unet, name: models.unet.name, sha256: models.unet.hash))
        if let classifier {
            try store.recordJobModel(JobModelRow(jobID: job.id, role: .classifier, name: classifier.name, sha256: classifier.hash))
        }
        return models
    }

    /// A shard whose images are all recorded: done, or, when it is the job's last, the job's
    /// contact sheet and metrics (once per job), then the job done and its file moved to done/.
    func endShard(_ claim: ShardClaim, spec: JobSpec, directory: String, started: Double) async -> JobOutcome {
        let end: ShardEnd
        do {
            end = try await storeCall(claim) { try store.finishShard(claim) }
        } catch {
            return finisher.end(claim, error: error, failing: "cannot end shard \(claim.shard)")
        }
        if end == .moreShards {
            logger.info("shard done", metadata: ["job": "\(claim.job.id)", "shard": "\(claim.shard)"])
            return .shardDone
        }
        await finisher.finishOutputs(job: claim.job, spec: spec, directory: directory, started: started, config: config.current)
        do {
            try await storeCall(claim) { try store.completeJob(claim) }
        } catch {
            return finisher.end(claim, error: error, failing: "cannot complete job \(claim.job.id)")
        }
        _ = try? spool.finish(spoolName: claim.job.spoolName)
        logger.info("job done", metadata: ["job": "\(claim.job.id)"])
        return .done
    }
}
