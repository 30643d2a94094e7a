import Foundation
import Logging
import Provenance
@testable import DiffusionDaemon

/// A job runner on the real engine over the bundles in `models` (the tiny fixture bundles): one
/// thread, batches of 8, no metrics, output under `dir`, and `jobs` (job file texts, validated by
/// `validator` under the file names given) queued in that order in an in-memory store.
func engineRunner(models: String, dir: String, jobs: [(fileName: String, text: String)], validator: JobValidator,
                  configure: (inout DaemonConfig) -> Void = { _ in }) throws -> (runner: JobRunner, store: ProvenanceStore) {
    let store = try ProvenanceStore.inMemory()
    var config = DaemonConfig()
    config.models = models
    config.output = dir + "/output"
    config.batchSize = 8
    config.threads = 1
    config.metrics.enabled = false
    configure(&config)
    for (n, job) in jobs.enumerated() {
        let spec = try validator.validate(Array(job.text.utf8), fileName: job.fileName)
        _ = try store.insertJob(NewJob(name: spec.name, spoolName: "\(n)--\(job.fileName)", sourceName: job.fileName,
                                       content: Array(job.text.utf8), spec: spec.jsonString(), totalImages: spec.totalImages))
    }
    let generator = EngineImageGenerator(modelsDirectory: models, cacheBytes: 1 << 30, threads: 1)
    let runner = JobRunner(store: store, generator: generator, config: config, spool: Spool(root: dir + "/spool"),
                           logger: Logger(label: "test"))
    return (runner, store)
}
