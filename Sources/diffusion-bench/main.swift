// Throughput of the engine's ADM UNet against the machine's measured peak, PyTorch and ONNX Runtime.
//
//   swift build -c release -Xswiftc -target-cpu -Xswiftc znver4 --product diffusion-bench
//   .build/release/diffusion-bench [--bundle models/fashion-mnist] [--batches 1,16,64,256]
//       [--seconds 1] [--no-torch] [--no-onnx] [--no-peak] [--no-classifier] [--classifier-bundle DIR] [--python PATH] [--blas-threads N] [--dnnl-threads N]
//       [--omp-wait-policy passive|active|inherit]
import DiffusionEngine
import Foundation
import ModelBundles

// OpenBLAS reads OPENBLAS_CORETYPE and libgomp reads OMP_WAIT_POLICY when they load: restart
// with the first removed (the environment may force Haswell kernels, which halve sgemm speed)
// and the second set as asked (default passive: idle OpenMP threads sleep instead of spinning,
// which matters when other processes share the cores; "inherit" keeps the environment's).
do {
    let args = CommandLine.arguments
    let policy = args.firstIndex(of: "--omp-wait-policy").flatMap { $0 + 1 < args.count ? args[$0 + 1] : nil } ?? "passive"
    let env = ProcessInfo.processInfo.environment
    var restart = false
    if env["OPENBLAS_CORETYPE"] != nil { unsetenv("OPENBLAS_CORETYPE"); restart = true }
    if policy != "inherit" && env["OMP_WAIT_POLICY"] != policy { setenv("OMP_WAIT_POLICY", policy, 1); restart = true }
    if restart {
        let argv = args.map { strdup($0) } + [nil]
        execv("/proc/self/exe", argv)
        fatalError("could not restart with the benchmark environment")
    }
}

struct Options {
    var bundle = "models/fashion-mnist"
    var batches = [1, 16, 64, 256]
    var seconds = 1.0
    var torch = true, onnx = true, peak = true, classifier = true
    var classifierBundle = "models/fashion-mnist-classifier"
    var python: String? = nil
    var blasThreads: Int? = nil, dnnlThreads: Int? = nil
}

func parseOptions() -> Options {
    var o = Options()
    var args = CommandLine.arguments.dropFirst().makeIterator()
    while let a = args.next() {
        switch a {
        case "--bundle": o.bundle = args.next()!
        case "--batches": o.batches = args.next()!.split(separator: ",").map { Int($0)! }
        case "--seconds": o.seconds = Double(args.next()!)!
        case "--no-torch": o.torch = false
        case "--no-onnx": o.onnx = false
        case "--no-peak": o.peak = false
        case "--no-classifier": o.classifier = false
        case "--classifier-bundle": o.classifierBundle = args.next()!
        case "--python": o.python = args.next()!
        case "--blas-threads": o.blasThreads = Int(args.next()!)!
        case "--dnnl-threads": o.dnnlThreads = Int(args.next()!)!
        case "--omp-wait-policy": _ = args.next()
        default:
            print("usage: diffusion-bench [--bundle DIR] [--batches 1,16,64,256] [--seconds S] [--no-torch] [--no-onnx] [--no-peak] [--no-classifier] [--classifier-bundle DIR] [--python PATH] [--blas-threads N] [--dnnl-threads N] [--omp-wait-policy passive|active|inherit]")
            exit(a == "--help" ? 0 : 2)
        }
    }
    return o
}

func seconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

/// Best and median time of `body` after one warm-up call.
func timed(minSeconds: Double, minReps: Int = 3, _ body: () throws -> Void) rethrows -> (best: Double, median: Double) {
    try body()
    var times: [Double] = []
    let start = seconds()
    while times.count < minReps || seconds() - start < minSeconds {
        let t0 = seconds()
        try body()
        times.append(seconds() - t0)
    }
    times.sort()
    return (times[0], times[times.count / 2])
}

let options = parseOptions()
ComputeRuntime.configure(blasThreads: options.blasThreads, dnnlThreads: options.dnnlThreads)
print("engine: \(ComputeRuntime.summary); OMP_WAIT_POLICY=\(ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] ?? "unset")")
for warning in ComputeRuntime.environmentWarnings { print("warning: \(warning)") }

// The network: the bundle's UNet, or the Fashion-MNIST configuration with random weights.
let defaultArchitecture = ADMArchitecture(
    type: "adm-unet", imageSize: 28, inChannels: 1, outChannels: 2, modelChannels: 32, numResBlocks: 2,
    attentionResolutions: [4], channelMult: [1, 2, 2], numClasses: 11, numHeads: 1, numHeadChannels: 32,
    useScaleShiftNorm: true, resblockUpdown: true, useNewAttentionOrder: false)
let unet: ADMUNet
var bundleDirectory: String? = nil
if FileManager.default.fileExists(atPath: options.bundle + "/model.json") {
    unet = try ModelBundle(directory: URL(fileURLWithPath: options.bundle)).makeUNet()
    bundleDirectory = options.bundle
    print("network: bundle \(options.bundle)")
} else {
    unet = try ADMUNet(architecture: defaultArchitecture, weights: try RandomWeights.adm(defaultArchitecture))
    print("network: \(options.bundle) not found; Fashion-MNIST configuration with random weights")
}
let arch = unet.architecture
let flopsPerImage = unet.flopsPerImage
print(String(format: "UNet: %dx%dx%d, mc %d, %.3f GFLOP per image (conv, linear, attention products)",
             arch.imageSize, arch.imageSize, arch.inChannels, arch.modelChannels, flopsPerImage / 1e9))

// Machine peak, measured now under the same load: the fastest of sgemm, a direct 3x3
// convolution and the same convolution by Winograd (the engine's algorithm for 3x3
// convolutions), whose rate counts direct-convolution FLOPs like the network's effective GFLOP/s.
let sgemmPeak = options.peak ? PeakMeasurement.sgemmGFLOPS(size: 2048) : .nan
let convPeak = options.peak ? PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32) : .nan
let winogradRate = options.peak ? PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32, winograd: true) : .nan
let peak = max(sgemmPeak, convPeak, winogradRate)
print(String(format: "peak: OpenBLAS sgemm 2048^3 %.0f GFLOP/s; oneDNN 3x3 conv 64->64ch 32x32 b64: direct %.0f, Winograd %.0f (effective) -> peak %.0f GFLOP/s",
             sgemmPeak, convPeak, winogradRate, peak))

// The engine.
var ours: [Int: (best: Double, median: Double)] = [:]
for b in options.batches {
    let x = Tensor(shape: [b, arch.inChannels, arch.imageSize, arch.imageSize])
    for i in 0..<x.count { x.data[i] = Float(sin(Double(i) * 0.37)) }
    let t = (0..<b).map { ($0 * 37) % 1000 }
    let y = arch.numClasses.map { k in (0..<b).map { $0 % k } }
    let out = Tensor(shape: [b, arch.outChannels, arch.imageSize, arch.imageSize])
    ours[b] = try timed(minSeconds: options.seconds) { try unet.forward(x, timesteps: t, classes: y, into: out) }
    let r = ours[b]!
    print(String(format: "engine   batch %4d: %8.1f img/s (median %8.1f), %6.1f GFLOP/s", b, Double(b) / r.best, Double(b) / r.median,
                 flopsPerImage * Double(b) / r.best / 1e9))
}

// PyTorch and ONNX Runtime through training/bench_torch.py, right after.
var others: [String: [Int: Double]] = [:]
if options.torch {
    let python = options.python ?? (FileManager.default.isExecutableFile(atPath: "training/work/venv/bin/python") ? "training/work/venv/bin/python" : "/usr/bin/python3")
    let archJSON = String(decoding: try JSONEncoder().encode(arch), as: UTF8.self)
    var args = ["training/bench_torch.py", "--batches", options.batches.map(String.init).joined(separator: ","),
                "--threads", String(ComputeRuntime.dnnlThreads), "--seconds", String(options.seconds)]
    if let bundleDirectory { args += ["--bundle", bundleDirectory] } else { args += ["--arch", archJSON] }
    if options.onnx { args.append("--onnx") }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: python)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle(forWritingAtPath: "/dev/null")
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
        guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let engine = obj["engine"] as? String else { continue }
        if let err = obj["error"] { print("\(engine): \(err)"); continue }
        guard let b = obj["batch"] as? Int, let best = obj["best_s"] as? Double, let median = obj["median_s"] as? Double else { continue }
        others[engine, default: [:]][b] = best
        print(String(format: "%-8@ batch %4d: %8.1f img/s (median %8.1f), %6.1f GFLOP/s  [%@ %@]", engine as NSString, b, Double(b) / best, Double(b) / median,
                     flopsPerImage * Double(b) / best / 1e9, engine as NSString, (obj["version"] as? String ?? "?") as NSString))
    }
    if p.terminationStatus != 0 { print("bench_torch.py exited with status \(p.terminationStatus) (python: \(python))") }
}

print("\nsummary (best times; images/s, effective GFLOP/s, % of peak, speed-up over PyTorch / ONNX Runtime):")
for b in options.batches {
    let r = ours[b]!
    let gflops = flopsPerImage * Double(b) / r.best / 1e9
    var line = String(format: "batch %4d: %8.1f img/s %6.1f GFLOP/s %5.1f%% of peak", b, Double(b) / r.best, gflops, 100 * gflops / peak)
    if let tb = others["pytorch"]?[b] { line += String(format: "  %.2fx PyTorch", tb / r.best) }
    if let ob = others["onnxruntime"]?[b] { line += String(format: "  %.2fx ONNX Runtime", ob / r.best) }
    print(line)
}
if let r = ours[64] {
    let gflops = flopsPerImage * 64 / r.best / 1e9
    let vsTorch = others["pytorch"]?[64].map { $0 / r.best }
    print(String(format: "targets at batch 64: >= 1.0x PyTorch: %@; >= 50%% of peak: %@ (%.0f%%)",
                 vsTorch.map { String(format: "%.2fx %@", $0, $0 >= 1 ? "met" : "NOT met") } ?? "not measured",
                 gflops >= 0.5 * peak ? "met" : "NOT met", 100 * gflops / peak))
}

// The noisy classifier's guidance gradient (forward + hand-written backward), for reference.
if options.classifier {
    let classifier: NoisyClassifier
    if FileManager.default.fileExists(atPath: options.classifierBundle + "/model.json") {
        classifier = try ModelBundle(directory: URL(fileURLWithPath: options.classifierBundle)).makeClassifier()
        print("\nclassifier: bundle \(options.classifierBundle)")
    } else {
        var a = defaultArchitecture
        a.type = "adm-encoder"; a.outChannels = 10; a.numClasses = nil; a.pool = "attention"
        classifier = try NoisyClassifier(architecture: a, weights: try RandomWeights.adm(a))
        print("\nclassifier: \(options.classifierBundle) not found; Fashion-MNIST encoder configuration (attention pool) with random weights")
    }
    let a = classifier.architecture
    for b in options.batches where b >= 16 {
        let x = Tensor(shape: [b, a.inChannels, a.imageSize, a.imageSize])
        for i in 0..<x.count { x.data[i] = Float(cos(Double(i) * 0.11)) }
        let t = (0..<b).map { ($0 * 53) % 1000 }, y = (0..<b).map { $0 % classifier.classCount }
        let logits = Tensor(shape: [b, classifier.classCount]), grad = Tensor(shape: x.shape)
        let fwd = try timed(minSeconds: options.seconds) { _ = try classifier.logits(x, timesteps: t) }
        let both = try timed(minSeconds: options.seconds) {
            try classifier.logProbabilityGradient(x, timesteps: t, classes: y, logits: logits, gradient: grad)
        }
        print(String(format: "classifier batch %4d: logits %8.1f img/s, logits + input gradient %8.1f img/s", b, Double(b) / fwd.best, Double(b) / both.best))
    }
}
