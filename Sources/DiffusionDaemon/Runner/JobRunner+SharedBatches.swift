import Foundation
import Provenance

/// Batches shared across jobs (`batch_across_jobs`): when a claim has fewer images left than a
/// batch, the next claims of the queue, in its order, join it while the generator can sample them
/// together and they fit; their images are sampled in one batch first, then each claim runs as
/// alone (its own folder, files, rows, cancel, lease and end), taking its images from that batch.
/// Every image is still the pure function of its own job's settings, seed and index.
extension JobRunner {
    /// A claim in a shared batch: its job's spec and the images it still lacks.
    struct SharedBatchMember {
        var claim: ShardClaim
        var spec: JobSpec
        var missing: [Int]
    }

    /// The images of one claim sampled in a shared batch, waiting for the claim's run.
    struct PresampledKey: Hashable {
        var jobID: Int64
        var indices: [Int]
    }

    /// The claim and the claims that join its batch (held as waiting leases), in queue order; and a
    /// claim taken that could not join (held too: the caller runs it next), if any.
    func gatherSharedBatch(lead: ShardClaim, request: ShardRequest) -> (members: [SharedBatchMember], next: ShardClaim?) {
        let cfg = config.current
        guard cfg.batchAcrossJobs, let spec = lead.job.spec.flatMap({ try? JobSpec.fromJSON($0) }),
              let missing = try? unrecorded(lead), !missing.isEmpty, missing.count < cfg.batchSize else { return ([], nil) }
        var members = [SharedBatchMember(claim: lead, spec: spec, missing: missing)]
        var images = missing.count
        while images < cfg.batchSize && !isStopping {
            let sent = ContinuousClock.now
            guard let outcome = try? store.claimNextShard(request) else { break }
            guard case let .claimed(claim) = outcome else {
                handleUnclaimed(outcome)
                continue
            }
            lease.startWaiting(claim, sent: sent, leaseSeconds: request.leaseSeconds)
            guard let s = claim.job.spec.flatMap({ try? JobSpec.fromJSON($0) }), let m = try? unrecorded(claim), !m.isEmpty,
                  images + m.count <= cfg.batchSize, generator.canShareBatch(spec, s) else {
                return (members.count > 1 ? members : [], claim)
            }
            members.append(SharedBatchMember(claim: claim, spec: s, missing: m))
            images += m.count
        }
        return (members.count > 1 ? members : [], nil)
    }

    /// Samples the members' images in one batch and keeps them for the members' runs. A member
    /// whose lease is lost meanwhile leaves the batch; on any failure the members sample alone.
    func presample(_ members: [SharedBatchMember]) async {
        let cfg = config.current
        let images = members.reduce(0) { $0 + $1.missing.count }
        let ids = members.map { "\($0.claim.job.id)" }.joined(separator: ",")
        let activity = self.activity, lease = self.lease, stop = stopRequested
        let claims = members.map(\.claim)
        activity.withLock {
            $0.startRun(jobID: claims[0].job.id, status: "sampling \(members.count) jobs together (\(ids))", done: 0,
                        total: images, at: Date().timeIntervalSince1970)
        }
        defer { activity.withLock { $0.endRun() } }
        do {
            for m in members { try await loadModels(for: m.spec) }
            let context = GenerationContext(shouldStop: { stop.current }, threads: cfg.threads,
                                            progress: { step in activity.withLock { $0.record(step) } })
            let sampled = try await generator.generate(members: members.map { BatchMember(job: $0.spec, indices: $0.missing) },
                                                       context: context, isCancelled: { !lease.isHeld(claims[$0]) })
            presampled.withLock { kept in
                for (m, imgs) in zip(members, sampled) where imgs.map(\.index) == m.missing {
                    kept[PresampledKey(jobID: m.claim.job.id, indices: m.missing)] = imgs.map {
                        var image = $0
                        image.recordFields["shared_batch"] = "jobs \(ids) (\(images) images)"
                        return image
                    }
                }
            }
            logger.info("shared batch sampled", metadata: ["jobs": "\(ids)", "images": "\(images)"])
        } catch {
            if !isStopping {
                logger.warning("shared batch failed; its jobs sample alone", metadata: ["jobs": "\(ids)", "error": "\(error)"])
            }
        }
    }

    /// The images of `indices` of job `jobID` sampled in a shared batch, taken (once).
    func takePresampled(jobID: Int64, indices: [Int]) -> [GeneratedImage]? {
        presampled.withLock { $0.removeValue(forKey: PresampledKey(jobID: jobID, indices: indices)) }
    }

    /// Drops what a shared batch sampled for jobs `ids` and no run took (a cancel, a lost lease).
    func dropPresampled(jobs ids: Set<Int64>) {
        presampled.withLock { kept in kept = kept.filter { !ids.contains($0.key.jobID) } }
    }
}
