// diffusion-bench's command line: every option, by stage (`--help` prints them).
import Foundation

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
    /// bf16 rows (the engine's and PyTorch's autocast) and torch.compile rows.
    var bf16 = true, compile = true
    var classifierBundle = "models/fashion-mnist-classifier"
    /// Debian's PyTorch 1.13 with ONNX Runtime, and PyPI's PyTorch 2 (each a peer server).
    var python: String? = nil
    var torch2Python: String? = nil
    /// Interleaved rounds of the throughput timings (medians and spread over them).
    var rounds = 3
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
           [--bundle DIR] [--batches 1,16,64,256] [--seconds S] [--rounds N] [--no-torch] [--no-onnx] [--no-peak] [--no-classifier]
           [--no-bf16] [--no-compile] [--classifier-bundle DIR] [--python PATH] [--torch2-python PATH] [--bin DIR] [--work DIR] [--warm-repeats N]
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
        case "--no-bf16": o.bf16 = false
        case "--no-compile": o.compile = false
        case "--rounds": o.rounds = max(1, number(a))
        case "--torch2-python": o.torch2Python = value(a)
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
