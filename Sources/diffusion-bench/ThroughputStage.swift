// Stage "throughput" (BENCHMARKS.md section 1): one UNet evaluation in the engine at several
// batch sizes, then PyTorch and ONNX Runtime on the same weights right after (same machine
// load), and the machine's peak measured in the same run.
import DiffusionEngine
import Foundation
import ModelBundles

struct ThroughputRow: Codable {
    var batch: Int
    var engineImagesPerSecond: Double
    var engineMedianImagesPerSecond: Double
    var engineGflops: Double
    var fractionOfPeak: Double
    var pytorchImagesPerSecond: Double?
    var pytorchMedianImagesPerSecond: Double?
    var onnxruntimeImagesPerSecond: Double?
    var onnxruntimeMedianImagesPerSecond: Double?
    var speedupVsPytorch: Double?
    var speedupVsOnnxruntime: Double?
}

struct ClassifierThroughputRow: Codable {
    var batch: Int
    var logitsImagesPerSecond: Double
    var logitsAndGradientImagesPerSecond: Double
}

struct PeakResult: Codable {
    var sgemmGflops: Double
    var convolutionDirectGflops: Double
    var convolutionWinogradGflops: Double
    /// The fastest of the three: the "measured peak".
    var peakGflops: Double
}

struct ThroughputResult: Codable {
    var network: String
    var gflopPerImage: Double
    var minSecondsPerTiming: Double
    var blasThreads: Int
    var dnnlThreads: Int
    var peak: PeakResult?
    var rows: [ThroughputRow]
    var pytorchVersion: String?
    var onnxruntimeVersion: String?
    var notes: [String]
    var classifier: [ClassifierThroughputRow]
    var classifierNetwork: String?
}

/// The Fashion-MNIST UNet configuration, with random weights when no bundle is at hand.
let defaultArchitecture = ADMArchitecture(
    type: "adm-unet", imageSize: 28, inChannels: 1, outChannels: 2, modelChannels: 32, numResBlocks: 2,
    attentionResolutions: [4], channelMult: [1, 2, 2], numClasses: 11, numHeads: 1, numHeadChannels: 32,
    useScaleShiftNorm: true, resblockUpdown: true, useNewAttentionOrder: false)

func runThroughputStage(_ options: Options) throws -> ThroughputResult {
    let unet: ADMUNet
    var bundleDirectory: String? = nil
    var network: String
    if FileManager.default.fileExists(atPath: options.bundle + "/model.json") {
        unet = try ModelBundle(directory: URL(fileURLWithPath: options.bundle)).makeUNet()
        bundleDirectory = options.bundle
        network = "bundle \(options.bundle)"
    } else {
        unet = try ADMUNet(architecture: defaultArchitecture, weights: try RandomWeights.adm(defaultArchitecture))
        network = "\(options.bundle) not found; Fashion-MNIST configuration with random weights"
    }
    log("network: \(network)")
    let arch = unet.architecture
    let flopsPerImage = unet.flopsPerImage
    network += String(format: " (%dx%dx%d, width %d)", arch.imageSize, arch.imageSize, arch.inChannels, arch.modelChannels)
    log(String(format: "UNet: %dx%dx%d, mc %d, %.3f GFLOP per image (conv, linear, attention products)",
               arch.imageSize, arch.imageSize, arch.inChannels, arch.modelChannels, flopsPerImage / 1e9))

    // Machine peak, measured now under the same load: the fastest of sgemm, a direct 3x3
    // convolution and the same convolution by Winograd (the engine's algorithm for 3x3
    // convolutions), whose rate counts direct-convolution FLOPs like the network's effective GFLOP/s.
    var peakResult: PeakResult? = nil
    if options.peak {
        let sgemm = PeakMeasurement.sgemmGFLOPS(size: 2048)
        let direct = PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32)
        let winograd = PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32, winograd: true)
        peakResult = PeakResult(sgemmGflops: sgemm, convolutionDirectGflops: direct, convolutionWinogradGflops: winograd,
                                peakGflops: max(sgemm, direct, winograd))
        log(String(format: "peak: OpenBLAS sgemm 2048^3 %.0f GFLOP/s; oneDNN 3x3 conv 64->64ch 32x32 b64: direct %.0f, Winograd %.0f (effective) -> peak %.0f GFLOP/s",
                   sgemm, direct, winograd, peakResult!.peakGflops))
    }
    let peak = peakResult?.peakGflops ?? .nan

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
        log(String(format: "engine   batch %4d: %8.1f img/s (median %8.1f), %6.1f GFLOP/s", b, Double(b) / r.best, Double(b) / r.median,
                   flopsPerImage * Double(b) / r.best / 1e9))
    }

    // PyTorch and ONNX Runtime through training/bench_torch.py, right after.
    var others: [String: [Int: (best: Double, median: Double)]] = [:]
    var versions: [String: String] = [:]
    var notes: [String] = []
    if options.torch {
        let python = options.python ?? (FileManager.default.isExecutableFile(atPath: "training/work/venv/bin/python") ? "training/work/venv/bin/python" : "/usr/bin/python3")
        let archJSON = String(decoding: try JSONEncoder().encode(arch), as: UTF8.self)
        var args = ["training/bench_torch.py", "--batches", options.batches.map(String.init).joined(separator: ","),
                    "--threads", String(ComputeRuntime.dnnlThreads), "--seconds", String(options.seconds)]
        if let bundleDirectory { args += ["--bundle", bundleDirectory] } else { args += ["--arch", archJSON] }
        if options.onnx { args.append("--onnx") }
        let (status, output) = try runProgram(python, args)
        for line in output.split(separator: "\n") {
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let engine = obj["engine"] as? String else { continue }
            if let err = obj["error"] {
                log("\(engine): \(err)")
                notes.append("\(engine): \(err)")
                continue
            }
            guard let b = obj["batch"] as? Int, let best = obj["best_s"] as? Double, let median = obj["median_s"] as? Double else { continue }
            others[engine, default: [:]][b] = (best, median)
            if let v = obj["version"] as? String { versions[engine] = v }
            log(String(format: "%-8@ batch %4d: %8.1f img/s (median %8.1f), %6.1f GFLOP/s  [%@ %@]", engine as NSString, b, Double(b) / best, Double(b) / median,
                       flopsPerImage * Double(b) / best / 1e9, engine as NSString, (obj["version"] as? String ?? "?") as NSString))
        }
        if status != 0 {
            log("bench_torch.py exited with status \(status) (python: \(python))")
            notes.append("training/bench_torch.py exited with status \(status) (python: \(python))")
        }
    }

    var rows: [ThroughputRow] = []
    log("\nsummary (best times; images/s, effective GFLOP/s, % of peak, speed-up over PyTorch / ONNX Runtime):")
    for b in options.batches {
        let r = ours[b]!
        let gflops = flopsPerImage * Double(b) / r.best / 1e9
        let torch = others["pytorch"]?[b], onnx = others["onnxruntime"]?[b]
        rows.append(ThroughputRow(
            batch: b, engineImagesPerSecond: Double(b) / r.best, engineMedianImagesPerSecond: Double(b) / r.median,
            engineGflops: gflops, fractionOfPeak: gflops / peak,
            pytorchImagesPerSecond: torch.map { Double(b) / $0.best }, pytorchMedianImagesPerSecond: torch.map { Double(b) / $0.median },
            onnxruntimeImagesPerSecond: onnx.map { Double(b) / $0.best }, onnxruntimeMedianImagesPerSecond: onnx.map { Double(b) / $0.median },
            speedupVsPytorch: torch.map { $0.best / r.best }, speedupVsOnnxruntime: onnx.map { $0.best / r.best }))
        var line = String(format: "batch %4d: %8.1f img/s %6.1f GFLOP/s %5.1f%% of peak", b, Double(b) / r.best, gflops, 100 * gflops / peak)
        if let torch { line += String(format: "  %.2fx PyTorch", torch.best / r.best) }
        if let onnx { line += String(format: "  %.2fx ONNX Runtime", onnx.best / r.best) }
        log(line)
    }
    if let r = ours[64] {
        let gflops = flopsPerImage * 64 / r.best / 1e9
        let vsTorch = others["pytorch"]?[64].map { $0.best / r.best }
        log(String(format: "targets at batch 64: >= 1.0x PyTorch: %@; >= 50%% of peak: %@ (%.0f%%)",
                   vsTorch.map { String(format: "%.2fx %@", $0, $0 >= 1 ? "met" : "NOT met") } ?? "not measured",
                   gflops >= 0.5 * peak ? "met" : "NOT met", 100 * gflops / peak))
    }

    // The noisy classifier's guidance gradient (forward + hand-written backward), for reference.
    var classifierRows: [ClassifierThroughputRow] = []
    var classifierNetwork: String? = nil
    if options.classifier {
        let classifier: NoisyClassifier
        if FileManager.default.fileExists(atPath: options.classifierBundle + "/model.json") {
            classifier = try ModelBundle(directory: URL(fileURLWithPath: options.classifierBundle)).makeClassifier()
            classifierNetwork = "bundle \(options.classifierBundle)"
        } else {
            var a = defaultArchitecture
            a.type = "adm-encoder"; a.outChannels = 10; a.numClasses = nil; a.pool = "attention"
            classifier = try NoisyClassifier(architecture: a, weights: try RandomWeights.adm(a))
            classifierNetwork = "\(options.classifierBundle) not found; Fashion-MNIST encoder configuration (attention pool) with random weights"
        }
        log("\nclassifier: \(classifierNetwork!)")
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
            classifierRows.append(ClassifierThroughputRow(batch: b, logitsImagesPerSecond: Double(b) / fwd.best,
                                                          logitsAndGradientImagesPerSecond: Double(b) / both.best))
            log(String(format: "classifier batch %4d: logits %8.1f img/s, logits + input gradient %8.1f img/s", b, Double(b) / fwd.best, Double(b) / both.best))
        }
    }
    return ThroughputResult(
        network: network, gflopPerImage: flopsPerImage / 1e9, minSecondsPerTiming: options.seconds,
        blasThreads: ComputeRuntime.blasThreads, dnnlThreads: ComputeRuntime.dnnlThreads, peak: peakResult, rows: rows,
        pytorchVersion: versions["pytorch"], onnxruntimeVersion: versions["onnxruntime"], notes: notes,
        classifier: classifierRows, classifierNetwork: classifierNetwork)
}

/// A rough prediction of the stage's run time: each engine, PyTorch and ONNX Runtime timing runs
/// for at least `seconds` (plus a warm-up call), the peak measurement a few seconds, ONNX export
/// and library start-up about ten.
func expectedThroughputSeconds(_ options: Options) -> Double {
    let engines = 1.0 + (options.torch ? 1 : 0) + (options.onnx && options.torch ? 1 : 0)
    let classifierTimings = options.classifier ? 2.0 * Double(options.batches.filter { $0 >= 16 }.count) : 0
    let timings = Double(options.batches.count) * engines + classifierTimings
    let images = Double(options.batches.reduce(0, +))
    let warmUps = images / 363 * (options.torch ? 4 : 1.5)
    let fixed = (options.peak ? 4.0 : 0) + (options.torch ? 25.0 : 0)
    return timings * (options.seconds + 0.3) + warmUps + fixed
}
