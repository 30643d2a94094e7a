import DiffusionDaemon
import Foundation
import Provenance

/// The workers of a store and the active jobs' progress over their shards, for `diffusionctl status`.
extension StatusReport {
    /// One worker as its heartbeat row says.
    public struct Worker: Codable, Sendable {
        public var worker: String
        public var host: String
        public var pid: Int
        public var status: String
        public var cachedModels: [String]
        /// The shard it holds: job, shard number, index range and fencing token.
        public var jobID: Int64?
        public var shard: Int?
        public var firstIndex: Int?
        public var endIndex: Int?
        public var leaseToken: Int64?
        public var imagesDone: Int
        public var imagesPerSecond: Double
        public var heartbeatAgeSeconds: Double
        /// Its heartbeat is older than `staleAfter`: stopped, frozen or cut off.
        public var stale: Bool
    }

    /// An active job: images recorded over all its shards, and its shards done.
    public struct JobProgress: Codable, Sendable {
        public var id: Int64
        public var name: String
        public var imagesDone: Int
        public var imagesTotal: Int
        public var shardsDone: Int
        public var shardsTotal: Int
        /// The workers holding its shards now.
        public var workers: [String]
    }

    static func workers(store: any JobStore, now: Double) throws -> [Worker] {
        try store.workers().map { w in
            let age = now - w.updatedAt
            return Worker(worker: w.worker, host: w.host, pid: w.pid, status: w.status, cachedModels: w.cachedModels, jobID: w.jobID,
                          shard: w.shard, firstIndex: w.firstIndex, endIndex: w.endIndex, leaseToken: w.leaseToken,
                          imagesDone: w.imagesDone, imagesPerSecond: w.imagesPerSecond, heartbeatAgeSeconds: age,
                          stale: age >= staleAfter || w.status == "stopping")
        }
    }

    static func progress(store: any JobStore) throws -> [JobProgress] {
        try store.jobs(states: [.active], limit: 100).reversed().map { job in
            let shards = try store.shards(jobID: job.id)
            return JobProgress(id: job.id, name: job.name, imagesDone: try store.imageCount(jobID: job.id), imagesTotal: job.totalImages,
                               shardsDone: shards.filter { $0.state == .done }.count, shardsTotal: shards.count,
                               workers: shards.filter { $0.state == .leased }.compactMap(\.worker))
        }
    }

    /// The workers and jobs section: shown when more than one worker has written to the store, or a job runs in several shards.
    func renderWorkers() -> [String] {
        guard workers.count > 1 || jobs.contains(where: { $0.shardsTotal > 1 }) else { return [] }
        var out = ["workers: \(workers.count)"]
        for w in workers {
            let holds = w.jobID.map { job in
                "job \(job) shard \(w.shard ?? 0) [\(w.firstIndex ?? 0), \(w.endIndex ?? 0)) token \(w.leaseToken ?? 0), "
                    + "\(w.imagesDone) images at \(String(format: "%.2f", w.imagesPerSecond))/s"
            } ?? "no shard"
            let age = "heartbeat \(Self.duration(w.heartbeatAgeSeconds)) ago" + (w.stale ? " (stale)" : "")
            let models = w.cachedModels.isEmpty ? "none" : w.cachedModels.joined(separator: ", ")
            out.append("  \(w.worker)  \(w.host) pid \(w.pid)  \(w.status)  \(holds)  cache: \(models)  \(age)")
        }
        if !jobs.isEmpty { out.append("jobs running:") }
        for j in jobs {
            out.append("  \(j.id)  \(j.name)  \(j.imagesDone)/\(j.imagesTotal) images  shards \(j.shardsDone)/\(j.shardsTotal) done"
                       + (j.workers.isEmpty ? "" : "  on \(j.workers.joined(separator: ", "))"))
        }
        return out
    }
}
