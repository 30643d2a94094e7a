// The small-jobs stage: many small jobs dropped into the spool at once (200 one-image jobs and 20
// ten-image jobs, DDIM 25), through the real diffusiond on its default config, with batches shared
// across jobs (the default) and without (`batch_across_jobs: false`: each job sampled alone), in
// interleaved rounds. Jobs/s from the first file dropped to the last job done; every job's images
// are checked bit-identical between the two modes.
import Digests
import Foundation
import ImageCodecs
import Provenance

/// One run of the pile through one daemon.
struct SmallJobsRun: Codable, Sendable {
    var batchAcrossJobs: Bool
    var jobs: Int
    var images: Int
    var seconds: Double
    var jobsPerSecond: Double
    var imagesPerSecond: Double
}

/// The small-jobs stage's record.
struct SmallJobsResult: Codable, Sendable {
    var oneImageJobs: Int
    var tenImageJobs: Int
    var sampler: String
    var rounds: Int
    /// Median rounds: shared batches on, off.
    var shared: SmallJobsRun
    var alone: SmallJobsRun
    var sharedRounds: [Double]
    var aloneRounds: [Double]
    var speedup: Double
    /// Whether every image's pixels agree between the two modes.
    var bitIdentical: Bool
    /// An older diffusiond (`--baseline-bin`), when given.
    var baseline: SmallJobsBaseline?
}

/// An older diffusiond on parts of the pile, one job at a time as it runs them: the pile's time
/// predicted as the sum of its parts (one-image jobs x their time each, ten-image jobs likewise).
struct SmallJobsBaseline: Codable, Sendable {
    var bin: String
    var version: String
    var oneImageJobs: Int
    var oneImageSeconds: Double
    var tenImageJobs: Int
    var tenImageSeconds: Double
    /// Of the whole pile (200 + 20 jobs), predicted from the parts.
    var predictedSeconds: Double
    var predictedJobsPerSecond: Double
    /// The shared-batch median's jobs/s over the prediction.
    var speedup: Double
}

func expectedSmallJobsSeconds(_ options: Options) -> Double { options.quick ? 120 : 1800 }

func runSmallJobsStage(_ options: Options) throws -> StageOutcome<SmallJobsResult> {
    let ones = options.quick ? 40 : 200, tens = options.quick ? 4 : 20, rounds = options.quick ? 1 : 3
    let sampler = "{kind: ddim, steps: 25}"
    var jobs: [(name: String, text: String)] = []
    for n in 0 ..< ones {
        jobs.append(("one-\(n)", "name: one-\(n)\nmode: class-conditional\nclasses: [\(fashionClass(n % 10))]\nimages: 1\nseed: \(n + 1)\nsampler: \(sampler)\n"))
    }
    for n in 0 ..< tens {
        jobs.append(("ten-\(n)", "name: ten-\(n)\nmode: class-conditional\nimages: 10\nseed: \(1000 + n)\nsampler: \(sampler)\n"))
    }
    let bin = options.bin, models = URL(fileURLWithPath: options.models).standardizedFileURL.path
    var runs: [Bool: [SmallJobsRun]] = [:]
    var pixels: [Bool: [String: String]] = [:]
    for round in 1 ... rounds {
        for shared in [true, false] {
            let d = try DaemonUnderTest(bin: bin, root: options.work + "/bench-small-jobs", models: models, preload: ["fashion-mnist"],
                                        extraConfig: "batch_across_jobs: \(shared)\n")
            defer { d.stop() }
            _ = try d.waitReady()
            guard let store = d.store else { throw BenchError("no store of the small-jobs daemon") }
            let started = wallClock()
            try drop(jobs, into: d.root + "/spool/incoming")
            let t0 = seconds()
            var finished: [JobRow] = []
            while finished.count < jobs.count {
                guard seconds() - t0 < 1800 else { throw BenchError("small jobs: \(finished.count) of \(jobs.count) done after 30 min") }
                guard d.process.isRunning else { throw BenchError("diffusiond exited; log: \(d.root)/daemon.log") }
                usleep(100_000)
                finished = try store.jobs(states: [.done, .failed, .canceled], limit: jobs.count + 1)
            }
            if let bad = finished.first(where: { $0.state != .done }) { throw BenchError("small job \(bad.name) \(bad.state.rawValue): \(bad.error ?? "")") }
            let wall = (finished.compactMap(\.finishedAt).max() ?? wallClock()) - started
            let images = finished.reduce(0) { $0 + $1.totalImages }
            let run = SmallJobsRun(batchAcrossJobs: shared, jobs: jobs.count, images: images, seconds: wall,
                                   jobsPerSecond: Double(jobs.count) / wall, imagesPerSecond: Double(images) / wall)
            log(String(format: "small jobs round %d, batch_across_jobs %@: %.1f s, %.2f jobs/s", round, "\(shared)", wall, run.jobsPerSecond))
            runs[shared, default: []].append(run)
            if round == 1 {
                // The pixels of every job, to compare the two modes.
                var digests: [String: String] = [:]
                for job in finished {
                    let rows = try store.images(jobID: job.id).sorted { $0.index < $1.index }
                    digests[job.name] = SHA256Hex.of(try rows.flatMap { try ImageFile.read(path: $0.path).image.pixels })
                }
                pixels[shared] = digests
            }
        }
    }
    let (on, sharedRates) = medianRound(runs[true]!, by: \.jobsPerSecond)
    let (off, aloneRates) = medianRound(runs[false]!, by: \.jobsPerSecond)
    var baseline: SmallJobsBaseline?
    if let old = options.baselineBin {
        let oneJobs = jobs.filter { $0.name.hasPrefix("one-") }, tenJobs = jobs.filter { $0.name.hasPrefix("ten-") }
        let oneSample = Array(oneJobs.prefix(max(1, ones / 10))), tenSample = Array(tenJobs.prefix(max(1, tens / 10)))
        let oneSeconds = try pileSeconds(bin: old, jobs: oneSample, options: options, models: models)
        let tenSeconds = try pileSeconds(bin: old, jobs: tenSample, options: options, models: models)
        let predicted = oneSeconds / Double(oneSample.count) * Double(ones) + tenSeconds / Double(tenSample.count) * Double(tens)
        baseline = SmallJobsBaseline(
            bin: old, version: programLine(old + "/diffusiond", ["--version"]) ?? "?", oneImageJobs: oneSample.count,
            oneImageSeconds: oneSeconds, tenImageJobs: tenSample.count, tenImageSeconds: tenSeconds, predictedSeconds: predicted,
            predictedJobsPerSecond: Double(jobs.count) / predicted, speedup: on.jobsPerSecond / (Double(jobs.count) / predicted))
        log(String(format: "small jobs, %@: %d one-image jobs %.1f s, %d ten-image jobs %.1f s; the pile predicted %.0f s (%.3f jobs/s)",
                   old, oneSample.count, oneSeconds, tenSample.count, tenSeconds, predicted, Double(jobs.count) / predicted))
    }
    return StageOutcome(value: SmallJobsResult(
        oneImageJobs: ones, tenImageJobs: tens, sampler: sampler, rounds: rounds, shared: on, alone: off,
        sharedRounds: sharedRates, aloneRounds: aloneRates,
        speedup: on.jobsPerSecond / off.jobsPerSecond, bitIdentical: pixels[true] == pixels[false], baseline: baseline))
}

/// Drops `jobs` at once into a daemon of `bin` (its own config defaults, no new keys) and returns the
/// seconds until all are in spool/done (read from the spool: an older daemon's database may not be
/// readable by this build).
func pileSeconds(bin: String, jobs: [(name: String, text: String)], options: Options, models: String) throws -> Double {
    let d = try DaemonUnderTest(bin: bin, root: options.work + "/bench-small-jobs-baseline", models: models, preload: ["fashion-mnist"])
    defer { d.stop() }
    _ = try d.waitReady(openStore: false)
    let done = d.root + "/spool/done"
    let t0 = seconds()
    try drop(jobs, into: d.root + "/spool/incoming")
    while ((try? FileManager.default.contentsOfDirectory(atPath: done))?.count ?? 0) < jobs.count {
        guard seconds() - t0 < 3600 else { throw BenchError("baseline: not every job done within an hour; log \(d.root)/daemon.log") }
        guard d.process.isRunning else { throw BenchError("baseline diffusiond exited; log: \(d.root)/daemon.log") }
        if let failed = try? FileManager.default.contentsOfDirectory(atPath: d.root + "/spool/failed"), !failed.isEmpty {
            throw BenchError("baseline: jobs failed (\(failed.joined(separator: ", "))); log: \(d.root)/daemon.log")
        }
        usleep(50_000)
    }
    return seconds() - t0
}

/// Drops each job file into `incoming` the careful way (a dotfile, then a rename), as fast as it can.
func drop(_ jobs: [(name: String, text: String)], into incoming: String) throws {
    for (name, text) in jobs {
        let temp = incoming + "/.\(name).yml.part"
        guard FileManager.default.createFile(atPath: temp, contents: Data(text.utf8)), rename(temp, incoming + "/\(name).yml") == 0 else {
            throw BenchError("cannot drop \(name).yml into \(incoming)")
        }
    }
}

/// Fashion-MNIST's class names, by index.
func fashionClass(_ i: Int) -> String {
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"][i]
}
