// diffusion-bench: the benchmarks behind BENCHMARKS.md, in stages that each write their record
// into docs/bench/results.json (scripts/bench_report.py renders BENCHMARKS.md from it,
// scripts/bench_plots.py the plots under docs/bench/):
//
//   throughput  the engine's UNet against PyTorch, ONNX Runtime and the measured peak (section 1)
//   daemon      a 256-image job through diffusiond against the engine alone, cold start, warm
//               latency, peak RSS (sections 2 and 5)
//   sampling    the quality sweep's images, cached under training/work/bench-samples/ (3 and 4)
//   quality     FID, KID, precision, recall, class accuracy of every cached row (3 and 4)
//   queue       the shared store's queue machinery alone: jobs/s against 1, 2, 4, 8 workers, and the
//               claim, fenced record and end of a shard (throwaway PostgreSQL; docs/scale-out.md)
//   smalljobs   200 one-image and 20 ten-image jobs at once through diffusiond, batches shared
//               across jobs against each job alone
//   fleet       real diffusiond workers on one shared PostgreSQL store: jobs/s of 1, 2, 4, 8 workers
//               with the test generator, images/s of 1 and 2 one-thread engine workers
//
//   make bench          # every stage, the full grid (under 60 minutes on the 2-core build machine)
//   make bench-quick    # every stage, --quick: fewer timings, a small grid, N = 60 (under 10 minutes)
//
//   swift build -c release -Xswiftc -target-cpu -Xswiftc skylake-avx512
//   .build/release/diffusion-bench --stages STAGE[,STAGE...] [options]   # `--help`: every option, by stage
//     (daemon, smalljobs and fleet run the diffusiond beside this executable unless --bin names another folder)
import DiffusionEngine
import Foundation
import ModelBundles

// OpenBLAS reads OPENBLAS_CORETYPE and libgomp reads OMP_WAIT_POLICY when they load: restart
// with OpenBLAS's kernels set to this CPU's best family when its own choice (or the environment's,
// which may force Haswell) is below it (KernelSelection), and OMP_WAIT_POLICY set as asked (default
// passive: idle OpenMP threads sleep instead of spinning, which matters when other processes share
// the cores; "inherit" keeps the environment's).
do {
    let args = CommandLine.arguments
    let policy = args.firstIndex(of: "--omp-wait-policy").flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil } ?? "passive"
    KernelSelection.relaunchWithBestKernelsIfNeeded(waitPolicy: policy == "inherit" ? .inherit : .exactly(policy))
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum Stage: String, CaseIterable {
    case throughput, daemon, smalljobs, sampling, quality, queue, fleet
}

struct Options {
    var quick = false
    var stages = Stage.allCases
    var plan = false
    var results = "docs/bench/results.json"
    var invocation: String? = nil
    // throughput
    var bundle = "models/fashion-mnist"
    var batches = [1, 16, 64, 256]
    var seconds = 1.0
    var secondsGiven = false
    var torch = true, onnx = true, peak = true, classifier = true
    var classifierBundle = "models/fashion-mnist-classifier"
    var python: String? = nil
    var blasThreads: Int? = nil, dnnlThreads: Int? = nil
    // daemon
    var bin = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
    var work = "training/work"
    var warmRepeats = 3
    // sampling and quality
    var models = "models"
    var model = "fashion-mnist"
    var samples = "training/work/bench-samples"
    var n: Int? = nil
    var guidanceN: Int? = nil
    /// Overrides of the Langevin rows' settings (`sigma_max=50,step_size=1e-4`): tuning runs.
    var langevinSettings: [String: Double] = [:]
    var seed: UInt64 = 2026
    var only: [String]? = nil
    var refreshSamples = false
    /// The fleet stage's simulated time an image of the test generator (about a one-thread engine
    /// worker's for DDIM 25 here), and an older diffusiond's folder for the small-jobs baseline row.
    var fleetDelayMs = 150
    var baselineBin: String? = nil
}

let usage = """
    usage: diffusion-bench [--quick] [--stages throughput,daemon,smalljobs,sampling,quality,queue,fleet] [--plan] [--results FILE] [--invocation TEXT]
           [--bundle DIR] [--batches 1,16,64,256] [--seconds S] [--no-torch] [--no-onnx] [--no-peak] [--no-classifier]
           [--classifier-bundle DIR] [--python PATH] [--bin DIR] [--work DIR] [--warm-repeats N]
           [--models DIR] [--model NAME] [--samples DIR] [--n N] [--guidance-n N] [--seed S] [--langevin-settings K=V,...] [--only ID,...] [--refresh-samples]
           [--fleet-delay-ms MS] [--baseline-bin DIR] [--blas-threads N] [--dnnl-threads N] [--omp-wait-policy passive|active|inherit]
    """

func parseOptions() -> Options {
    var o = Options()
    var args = CommandLine.arguments.dropFirst().makeIterator()
    func value(_ name: String) -> String {
        guard let v = args.next() else { print("\(name) needs a value\n\(usage)"); exit(2) }
        return v
    }
    func number<T: LosslessStringConvertible>(_ name: String) -> T {
        let text = value(name)
        guard let v = T(text) else { print("\(name): not a number: \(text)"); exit(2) }
        return v
    }
    while let a = args.next() {
        switch a {
        case "--quick": o.quick = true
        case "--stages":
            let names = value(a).split(separator: ",").map(String.init)
            o.stages = names.compactMap(Stage.init(rawValue:))
            if o.stages.count != names.count { print("--stages: one of \(Stage.allCases.map(\.rawValue))"); exit(2) }
        case "--plan": o.plan = true
        case "--results": o.results = value(a)
        case "--invocation": o.invocation = value(a)
        case "--bundle": o.bundle = value(a)
        case "--batches": o.batches = value(a).split(separator: ",").compactMap { Int($0) }
        case "--seconds": o.seconds = number(a); o.secondsGiven = true
        case "--no-torch": o.torch = false
        case "--no-onnx": o.onnx = false
        case "--no-peak": o.peak = false
        case "--no-classifier": o.classifier = false
        case "--classifier-bundle": o.classifierBundle = value(a)
        case "--python": o.python = value(a)
        case "--blas-threads": o.blasThreads = number(a)
        case "--dnnl-threads": o.dnnlThreads = number(a)
        case "--omp-wait-policy": _ = value(a)
        case "--bin": o.bin = value(a)
        case "--work": o.work = value(a)
        case "--warm-repeats": o.warmRepeats = max(1, number(a))
        case "--models": o.models = value(a)
        case "--model": o.model = value(a)
        case "--samples": o.samples = value(a)
        case "--n": o.n = number(a)
        case "--guidance-n": o.guidanceN = number(a)
        case "--langevin-settings":
            for pair in value(a).split(separator: ",") {
                let kv = pair.split(separator: "=")
                guard kv.count == 2, let v = Double(kv[1]), ["sigma_max", "sigma_min", "step_size"].contains(String(kv[0])) else {
                    print("--langevin-settings: KEY=VALUE pairs of sigma_max, sigma_min, step_size, got \(pair)"); exit(2)
                }
                o.langevinSettings[String(kv[0])] = v
            }
        case "--seed": o.seed = number(a)
        case "--only": o.only = value(a).split(separator: ",").map(String.init)
        case "--refresh-samples": o.refreshSamples = true
        case "--fleet-delay-ms": o.fleetDelayMs = max(0, number(a))
        case "--baseline-bin": o.baselineBin = value(a)
        default:
            print(usage)
            exit(a == "--help" || a == "-h" ? 0 : 2)
        }
    }
    if let n = o.n, n < 10 || n % 10 != 0 { print("--n must be a positive multiple of 10 (classes i mod 10, balanced)"); exit(2) }
    if let n = o.guidanceN, n < 10 || n % 10 != 0 { print("--guidance-n must be a positive multiple of 10 (classes i mod 10, balanced)"); exit(2) }
    return o
}

var options = parseOptions()
if options.quick && !options.secondsGiven { options.seconds = 0.3 }
let variant = options.quick ? "quick" : "full"
ComputeRuntime.configure(blasThreads: options.blasThreads, dnnlThreads: options.dnnlThreads)
log("diffusion-bench (\(variant)): stages \(options.stages.map(\.rawValue).joined(separator: ", "))")
log("engine: \(ComputeRuntime.summary); OMP_WAIT_POLICY=\(ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] ?? "unset")")
for warning in ComputeRuntime.environmentWarnings { log("warning: \(warning)") }

let plan = SweepPlan.make(options: options)
let invocation = options.invocation ?? (["diffusion-bench"] + CommandLine.arguments.dropFirst()).joined(separator: " ")

/// The command that reruns one stage with this run's settings.
@MainActor
func stageCommand(_ stage: Stage) -> String {
    var parts = ["diffusion-bench"]
    if options.quick { parts.append("--quick") }
    parts += ["--stages", stage.rawValue]
    if stage == .throughput {
        parts += ["--python", options.python ?? "training/work/venv/bin/python"]
        if options.secondsGiven { parts += ["--seconds", "\(options.seconds)"] }
    }
    if stage == .sampling || stage == .quality {
        if let n = options.n { parts += ["--n", "\(n)"] }
        if let n = options.guidanceN { parts += ["--guidance-n", "\(n)"] }
        if !options.langevinSettings.isEmpty {
            parts += ["--langevin-settings", options.langevinSettings.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")]
        }
        if options.seed != 2026 { parts += ["--seed", "\(options.seed)"] }
    }
    return parts.joined(separator: " ")
}

// The plan: every stage with its predicted time (assumed engine speed until measured).
do {
    let assumed = SamplingCalibration.assumed
    log("plan (expected times at \(Int(assumed.unetRowsPerSecond)) UNet rows/s, \(Int(assumed.classifierRowsPerSecond)) classifier gradient rows/s):")
    for stage in options.stages {
        switch stage {
        case .throughput: log("  throughput: ~\(formatSeconds(expectedThroughputSeconds(options)))")
        case .daemon: log("  daemon: ~\(formatSeconds(expectedDaemonSeconds(options, calibration: assumed)))")
        case .sampling:
            log("  sampling: \(plan.rows.count) rows of N = \(plan.n) (guidance \(plan.guidanceN)), seed \(plan.seed): ~\(formatSeconds(expectedSamplingSeconds(plan: plan, calibration: assumed, options: options))) for the rows not cached")
            if options.plan {
                for row in plan.rows {
                    log(String(format: "    %@ %5d network + %4d classifier evaluations per image, ~%@", row.id.padding(toLength: 26, withPad: " ", startingAt: 0) as NSString,
                               row.networkEvaluationsPerImage, row.classifierEvaluationsPerImage,
                               formatSeconds(assumed.seconds(row, n: row.n))))
                }
            }
        case .quality: log("  quality: ~\(formatSeconds(expectedQualitySeconds(plan: plan)))")
        case .queue: log("  queue: ~\(formatSeconds(expectedQueueSeconds(options)))")
        case .fleet: log("  fleet: ~\(formatSeconds(expectedFleetSeconds(options)))")
        case .smalljobs: log("  smalljobs: ~\(formatSeconds(expectedSmallJobsSeconds(options)))")
        }
    }
    if options.plan { exit(0) }
}

var results = ResultsFile(path: options.results)
results.setHeader(machine: MachineInfo.current(), git: GitInfo.current(), invocation: invocation)
var failed: [String] = []

/// What a stage body returns: its result, or why it was skipped or (partly) failed.
struct StageOutcome<R> {
    var value: R?
    var skipped: String? = nil
    var failure: String? = nil
}

/// Runs one stage and records it (a thrown error is recorded as the stage's failure).
@MainActor
func record<R: Encodable>(_ stage: Stage, expected: Double?, _ body: () async throws -> StageOutcome<R>) async {
    log("\n== stage \(stage.rawValue) (\(variant)) ==")
    let loadBefore = loadAverage()
    let t0 = seconds()
    var status = "done", reason: String? = nil
    var value: R? = nil
    do {
        let outcome = try await body()
        value = outcome.value
        if let skipped = outcome.skipped { status = "skipped"; reason = skipped; log("stage \(stage.rawValue) skipped: \(skipped)") }
        if let failure = outcome.failure { status = "failed"; reason = failure; failed.append(stage.rawValue) }
    } catch {
        status = "failed"
        reason = "\(error)"
        failed.append(stage.rawValue)
        log("stage \(stage.rawValue) FAILED: \(error)")
    }
    let elapsed = seconds() - t0
    log("stage \(stage.rawValue): \(status) in \(formatSeconds(elapsed))" + (expected.map { " (expected \(formatSeconds($0)))" } ?? ""))
    do {
        try results.setStage(stage.rawValue, StageRecord(
            status: status, reason: reason, variant: variant, date: ResultsFile.isoDate(), command: stageCommand(stage),
            expectedSeconds: expected, seconds: elapsed, loadAverageBefore: loadBefore, loadAverageAfter: loadAverage(),
            result: value))
    } catch {
        log("cannot write \(options.results): \(error)")
        failed.append("results")
    }
}

// The engine's sampling speed, measured once for the daemon and sampling stages' predictions.
var calibration = SamplingCalibration.assumed
if options.stages.contains(.daemon) || options.stages.contains(.sampling) {
    do {
        calibration = try SamplingCalibration.measure(options: options)
        log(String(format: "calibration: %.0f UNet rows/s in a sampling chain, %.0f classifier gradient rows/s (batch 64)",
                   calibration.unetRowsPerSecond, calibration.classifierRowsPerSecond))
    } catch {
        log("calibration failed (\(error)); predictions use the assumed speeds")
    }
}

for stage in options.stages {
    switch stage {
    case .throughput:
        await record(stage, expected: expectedThroughputSeconds(options)) { StageOutcome(value: try runThroughputStage(options)) }
    case .daemon:
        await record(stage, expected: expectedDaemonSeconds(options, calibration: calibration)) { StageOutcome(value: try runDaemonStage(options)) }
    case .sampling:
        await record(stage, expected: expectedSamplingSeconds(plan: plan, calibration: calibration, options: options)) {
            let r = try await runSamplingStage(plan: plan, calibration: calibration, options: options)
            let errors = r.rows.filter { $0.error != nil }.map(\.id)
            return StageOutcome(value: r, failure: errors.isEmpty ? nil : "rows failed: \(errors.joined(separator: ", "))")
        }
    case .quality:
        await record(stage, expected: expectedQualitySeconds(plan: plan)) {
            let (r, skipped) = try runQualityStage(plan: plan, options: options)
            return StageOutcome(value: r, skipped: skipped)
        }
    case .queue:
        await record(stage, expected: expectedQueueSeconds(options)) { try runQueueStage(options) }
    case .fleet:
        await record(stage, expected: expectedFleetSeconds(options)) { try runFleetStage(options) }
    case .smalljobs:
        await record(stage, expected: expectedSmallJobsSeconds(options)) { try runSmallJobsStage(options) }
    }
}

log("\nresults: \(options.results)")
if !failed.isEmpty {
    log("failed: \(failed.joined(separator: ", "))")
    exit(1)
}
