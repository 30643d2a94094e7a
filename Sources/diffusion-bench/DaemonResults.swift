// The daemon stage's results (results.json, BENCHMARKS.md sections 2 and 5).
import Foundation

struct JobTiming: Codable {
    var name: String
    var jobId: Int64
    var state: String
    var images: Int
    /// `diffusionctl submit` started -> the job's finished_at (end to end, what a user waits).
    var submitToDoneSeconds: Double
    /// submit -> the daemon's job row (spool inotify + validation).
    var submitToIngestSeconds: Double
    /// job row -> claimed (the runner's wake-up).
    var ingestToStartSeconds: Double
    /// claimed -> done (sampling, image files, database rows, contact sheet, job metrics).
    var runSeconds: Double
}

struct ModelLoadTiming: Codable {
    var name: String
    var loadSeconds: Double
    var bytes: Int
}

struct ColdStart: Codable {
    var preload: [String]
    /// Process start -> READY=1 on the notify socket.
    var readySeconds: Double
    /// The loads recorded in the database (read, SHA-256 check, network construction).
    var modelLoads: [ModelLoadTiming]
    /// readySeconds minus the loads: the daemon's own start (exec, config, database, recovery).
    var startWithoutLoadsSeconds: Double
}

struct EndToEndResult: Codable {
    var job: String
    var settings: String
    var images: Int
    var seed: UInt64
    var batchSize: Int
    var samplingConfiguration: JSONValue?
    var daemon: JobTiming
    /// The engine alone on the same work, before run 1 and after run 2.
    var engineSeconds: [Double]
    var engineMeanSeconds: Double
    /// (submit -> done) / engine - 1, in percent: the headline overhead.
    var overheadPercent: Double
    /// (claimed -> done) / engine - 1, in percent: without spool pick-up.
    var runOverheadPercent: Double
    /// Whether every daemon image equals the engine's pixels.
    var identicalPixels: Bool?
    /// Whether the daemon's recorded sampling configuration equals the engine's.
    var identicalConfiguration: Bool?
}

struct WarmJobResult: Codable {
    var job: String
    var settings: String
    var runs: [JobTiming]
    var medianSubmitToDoneSeconds: Double
    /// The engine alone on the same job, timed after a first run built its plans.
    var engineSeconds: Double
}

struct MemoryResult: Codable {
    /// VmRSS after READY=1 in run 1 (fashion-mnist cached).
    var rssAfterReadyMib: Double
    /// VmHWM at the end of the 256-image job: the peak RSS of the process so far, i.e. during the job.
    var peakRssDuringJobMib: Double
    /// The largest VmRSS sampled every 0.1 s during the job.
    var maxSampledRssDuringJobMib: Double
    /// Run 2, all three bundles preloaded: VmRSS and VmHWM after READY=1 ...
    var allBundlesRssAfterReadyMib: Double
    var allBundlesPeakAfterReadyMib: Double
    /// ... and after a 10-image classifier-guided job (UNet and classifier both evaluated).
    var allBundlesRssAfterGuidedJobMib: Double?
    var allBundlesPeakAfterGuidedJobMib: Double?
    /// The cached models the daemon reported (heartbeat) in run 2.
    var allBundlesCached: [String]
}

struct DaemonResult: Codable {
    var config: String
    var endToEnd: EndToEndResult
    var coldStart: ColdStart
    var coldStartAllBundles: ColdStart
    var warm: WarmJobResult
    var memory: MemoryResult
    var notes: [String]
}
