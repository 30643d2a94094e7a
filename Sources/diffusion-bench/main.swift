// diffusion-bench: the benchmarks behind BENCHMARKS.md, in stages that each write their record
// into docs/bench/results.json (scripts/bench_report.py renders BENCHMARKS.md from it,
// scripts/bench_plots.py the plots under docs/bench/):
//
//   throughput  the engine's UNet (fp32, bf16) against PyTorch 1.13 and 2.x (eager, torch.compile,
//               bf16 autocast), ONNX Runtime and the measured peak, interleaved rounds (section 1)
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

var options = parseOptions()
if options.quick && !options.secondsGiven { options.seconds = 0.3 }
// torch.compile compiles every batch size at start-up (minutes): the quick variant leaves it out.
if options.quick { options.compile = false }
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
        parts += ["--python", options.python ?? "training/work/venv/bin/python",
                  "--torch2-python", options.torch2Python ?? "training/.venv/bin/python"]
        if options.secondsGiven { parts += ["--seconds", "\(options.seconds)"] }
        if options.rounds != 3 { parts += ["--rounds", "\(options.rounds)"] }
        if !options.compile { parts.append("--no-compile") }
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
let machine = MachineInfo.current()
results.setHeader(machine: machine, git: GitInfo.current(), invocation: invocation)
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
            expectedSeconds: expected, seconds: elapsed, machine: machine.cpu, loadAverageBefore: loadBefore, loadAverageAfter: loadAverage(),
            result: value), mergingRowsByID: options.only != nil && (stage == .sampling || stage == .quality))
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
