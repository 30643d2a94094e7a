import ArgumentParser
import DiffusionDaemon
import Digests
import Foundation
import ImageCodecs
import Provenance

extension DiffusionCtl {
    struct Retry: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queue a failed or canceled job again; it resumes at its first unrecorded image.",
            discussion: "The job keeps its spec and seed, so the images it makes are those it would have made; the ones already recorded stay. Its file goes back to spool/active (from the database), its copy in spool/failed is removed.")
        @OptionGroup var common: Common
        @Argument(help: "The job id.") var job: Int64

        func run() throws {
            let cfg = try common.effectiveConfig()
            let store = try common.openStore()
            let row: JobRow
            do {
                row = try store.retry(jobID: job, reason: "retry requested (diffusionctl retry)")
            } catch let error as ProvenanceError {
                throw ValidationError(error.description)
            }
            let done = try store.imageCount(jobID: job)
            // The spool keeps the daemon's invariant: a job that is not final has its file in active/.
            let spool = Spool(root: cfg.spool)
            if let content = try store.jobContent(id: job) {
                try? AtomicFile.write(content, to: spool.active + "/" + row.spoolName)
                spool.removeFailedCopy(named: row.sourceName, sha256: row.contentSHA256)
            }
            try common.emit(["job": String(job), "state": row.state.rawValue, "images_recorded": String(done),
                             "images": String(row.totalImages)]) {
                "job \(job) (\(row.name)) queued again: \(done) of \(row.totalImages) images are recorded; it resumes at the next"
            }
            common.warnWhenNoDaemon(state: cfg.state, what: "the job waits")
        }
    }
}
