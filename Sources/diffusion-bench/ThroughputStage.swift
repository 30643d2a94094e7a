// Stage "throughput" (BENCHMARKS.md section 1): one UNet evaluation in the engine (fp32 and bf16)
// against PyTorch (Debian's 1.13; PyPI's 2.x eager, torch.compile, bf16 autocast) and ONNX Runtime
// on the same weights at several batch sizes, and the machine's peak: every runtime timed in every
// round, the rounds interleaved, so each figure is a median over rounds taken under the same load,
// with its spread.
import DiffusionDaemon
import DiffusionEngine
import Foundation
import ModelBundles

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
    var notes: [String] = []
    let bf16Reason = ComputePrecision.bf16.unsupportedReason(on: .current)
    if let bf16Reason, options.bf16 { notes.append("no engine bf16 rows: \(bf16Reason)") }
    let bf16 = options.bf16 && bf16Reason == nil ? try ADMUNet(unet, precision: .bf16) : nil
    let cpu = CPUReport(model: MachineInfo.current().cpu, flags: KernelSelection.current.features, openblasCore: ComputeRuntime.blasCoreName,
                        convolutionKernels: ["fp32": PeakMeasurement.convolutionKernel(precision: .fp32)]
                            .merging(bf16 == nil ? [:] : ["bf16": PeakMeasurement.convolutionKernel(precision: .bf16)]) { a, _ in a })
    log("CPU: \(cpu.model); flags \(cpu.flags.joined(separator: " ")); OpenBLAS \(cpu.openblasCore); 3x3 convolutions: "
        + cpu.convolutionKernels.sorted { $0.key > $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))

    // The other runtimes, one server per Python, prepared (and compiled) before the first round.
    var servers: [PeerServer] = []
    defer { servers.forEach { $0.stop() } }
    if options.torch {
        let archJSON = String(decoding: try JSONEncoder().encode(arch), as: UTF8.self)
        let debian = options.python ?? "training/work/venv/bin/python"
        let torch2 = options.torch2Python ?? "training/.venv/bin/python"
        var wanted: [(String, [String])] = [(debian, ["pytorch-eager"] + (options.onnx ? ["onnxruntime"] : []))]
        var modern = ["pytorch-eager"] + (options.compile ? ["pytorch-compile"] : [])
        if options.bf16 { modern += ["pytorch-eager-bf16"] + (options.compile ? ["pytorch-compile-bf16"] : []) }
        wanted.append((torch2, modern))
        for (index, (python, runtimes)) in wanted.enumerated() {
            guard FileManager.default.isExecutableFile(atPath: python) else {
                notes.append("\(python) not found: no \(runtimes.joined(separator: ", ")) rows from it"); continue
            }
            log("starting \(python) training/bench_torch.py (\(runtimes.joined(separator: ", "))): prepares and warms every runtime, torch.compile compiles")
            let started = seconds()
            let logPath = "\(options.work)/bench-torch-\(index).log"   // one per server, kept when it fails
            do {
                let server = try PeerServer(python: python, runtimes: runtimes, bundle: bundleDirectory, architectureJSON: archJSON,
                                            batches: options.batches, threads: ComputeRuntime.dnnlThreads, logPath: logPath)
                for (name, error) in server.errors { notes.append("\(python): \(name): \(error)"); log("\(name): \(error)") }
                log("  ready in \(formatSeconds(seconds() - started)): \(server.runtimes.map(\.label).joined(separator: ", "))")
                servers.append(server)
            } catch {
                notes.append("\(error)"); log("\(error)")
            }
        }
    }
    let peers = servers.flatMap { server in server.runtimes.map { (server, $0) } }

    // Inputs per batch size, shared by the engine's two precisions.
    let inputs = options.batches.map { b -> (Tensor, [Int], [Int]?, Tensor) in
        let x = Tensor(shape: [b, arch.inChannels, arch.imageSize, arch.imageSize])
        for i in 0..<x.count { x.data[i] = Float(sin(Double(i) * 0.37)) }
        return (x, (0..<b).map { ($0 * 37) % 1000 }, arch.numClasses.map { k in (0..<b).map { $0 % k } },
                Tensor(shape: [b, arch.outChannels, arch.imageSize, arch.imageSize]))
    }
    // The engine in fp32 on its own Winograd kernel and, beside it, the same network on oneDNN's
    // (plans built with `ConvolutionKernelChoice.engineWinograd` false): the kernel's gain, same run.
    var engines: [(id: String, net: ADMUNet)] = [("engine-fp32", unet)]
    let onednnWinograd = "engine-fp32-onednn-winograd"
    let engineKernel = ConvolutionKernelChoice.engineWinogradKernel != nil
    if engineKernel { engines.append((onednnWinograd, try ADMUNet(unet, precision: .fp32))) }
    if let bf16 { engines.append(("engine-bf16", bf16)) }

    var rounds: [String: [Int: [(best: Double, median: Double)]]] = [:]
    // A peak figure is the fastest of peakRepeats + 1 calls. The 64 -> 64, 32x32, batch-64
    // convolution streams some 40 MB per call: its rate follows the host's memory traffic from
    // one round to the next (530 or 725 GFLOP/s minutes apart on the AMD EPYC), which more calls
    // do not smooth out. The same Winograd kernel on problems that stay in each core's cache
    // (8 images per thread at the UNet's 28x28 x 64 channels, and at 8x8 x 128) is measured too,
    // and the round's peak is the fastest figure of all.
    let peakRepeats = 20
    typealias PeakRound = (sgemm: Double, direct: Double, winograd: Double, winogradLanes: Double, cacheResident: Double,
                           engineLanes: Double?, engineCacheResident: Double?, bf16: Double?)
    var peakRounds: [PeakRound] = []
    /// The issue's peak: the fastest figure on the 64 -> 64, 32x32, batch-64 problem alone.
    func fastestLarge(_ p: PeakRound) -> Double { max(p.sgemm, p.direct, p.winograd, p.winogradLanes, p.engineLanes ?? 0) }
    /// A round's fp32 peak: the fastest of its fp32 figures.
    func fastest(_ p: PeakRound) -> Double { max(fastestLarge(p), p.cacheResident, p.engineCacheResident ?? 0) }
    for round in 1 ... options.rounds {
        log("\nround \(round) of \(options.rounds)")
        if options.peak {
            let r = peakRepeats, threads = ComputeRuntime.dnnlThreads
            func cacheResident(engine: Bool) -> Double {
                max(PeakMeasurement.convolutionGFLOPS(batch: 8 * threads, channels: 64, size: 28, repeats: r, winograd: true, engineWinograd: engine, lanes: true),
                    PeakMeasurement.convolutionGFLOPS(batch: 8 * threads, channels: 128, size: 8, repeats: r, winograd: true, engineWinograd: engine, lanes: true))
            }
            let p = (sgemm: PeakMeasurement.sgemmGFLOPS(size: 2048, repeats: r),
                     direct: PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32, repeats: r),
                     winograd: PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32, repeats: r, winograd: true),
                     winogradLanes: PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32, repeats: r, winograd: true, lanes: true),
                     cacheResident: cacheResident(engine: false),
                     engineLanes: engineKernel ? PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32, repeats: r, winograd: true,
                                                                                    engineWinograd: true, lanes: true) : nil,
                     engineCacheResident: engineKernel ? cacheResident(engine: true) : nil,
                     bf16: bf16 == nil ? nil : PeakMeasurement.convolutionGFLOPS(batch: 64, channels: 64, size: 32, repeats: r, precision: .bf16))
            peakRounds.append(p)
            log(String(format: "peak: sgemm 2048^3 %.0f GFLOP/s; 3x3 conv 64->64ch 32x32 b64: direct %.0f, Winograd %.0f (effective), Winograd one per thread %.0f%@; in cache, one per thread %.0f",
                       p.sgemm, p.direct, p.winograd, p.winogradLanes, p.bf16.map { String(format: ", bf16 direct %.0f", $0) } ?? "", p.cacheResident)
                + (engineKernel ? String(format: "; the engine's Winograd one per thread %.0f, in cache %.0f", p.engineLanes ?? 0, p.engineCacheResident ?? 0) : ""))
        }
        for (k, b) in options.batches.enumerated() {
            let (x, t, y, out) = inputs[k]
            var line = "batch \(b):"
            for e in engines {
                let r = try ConvolutionKernelChoice.$engineWinograd.withValue(e.id != onednnWinograd) {
                    try timed(minSeconds: options.seconds) { try e.net.forward(x, timesteps: t, classes: y, into: out) }
                }
                rounds[e.id, default: [:]][b, default: []].append(r)
                line += String(format: " %@ %.0f", e.id, Double(b) / r.median)
            }
            for (server, peer) in peers {
                let r = try server.time(peer, batch: b, seconds: options.seconds)
                rounds[peer.id, default: [:]][b, default: []].append(r)
                line += String(format: " | %@ %.0f", peer.label, Double(b) / r.median)
            }
            log(line + " img/s (round medians)")
        }
    }

    let timings = rounds.flatMap { id, byBatch in byBatch.map { RuntimeTiming(runtime: id, batch: $0.key, rounds: $0.value) } }
        .sorted { ($0.runtime, $0.batch) < ($1.runtime, $1.batch) }
    func median(_ id: String, _ b: Int) -> Double? { timings.first { $0.runtime == id && $0.batch == b }?.medianImagesPerSecond }
    func mid(_ values: [Double]) -> Double { values.isEmpty ? .nan : medianRound(values) { $0 }.median }
    let peak: PeakResult? = peakRounds.isEmpty ? nil : PeakResult(
        sgemmGflops: mid(peakRounds.map(\.sgemm)), convolutionDirectGflops: mid(peakRounds.map(\.direct)),
        convolutionWinogradGflops: mid(peakRounds.map(\.winograd)),
        convolutionWinogradLanesGflops: mid(peakRounds.map(\.winogradLanes)),
        convolutionWinogradCacheResidentGflops: mid(peakRounds.map(\.cacheResident)),
        engineWinogradLanesGflops: engineKernel ? mid(peakRounds.compactMap(\.engineLanes)) : nil,
        engineWinogradCacheResidentGflops: engineKernel ? mid(peakRounds.compactMap(\.engineCacheResident)) : nil,
        peakGflops: mid(peakRounds.map(fastest)), roundsPeakGflops: peakRounds.map(fastest),
        largeProblemPeakGflops: mid(peakRounds.map(fastestLarge)),
        convolutionBF16Gflops: bf16 == nil ? nil : mid(peakRounds.compactMap(\.bf16)), callsPerFigure: peakRepeats + 1)
    let rows = options.batches.map { b -> ThroughputRow in
        let fp32 = median("engine-fp32", b)!, half = median("engine-bf16", b)
        var speedups: [String: Double] = [:]
        for (_, peer) in peers {
            if let theirs = median(peer.id, b), let ours = peer.precision == "bf16" ? half : fp32 { speedups[peer.id] = ours / theirs }
        }
        let gflops = flopsPerImage * fp32 / 1e9
        return ThroughputRow(batch: b, engineImagesPerSecond: fp32, engineGflops: gflops, fractionOfPeak: gflops / (peak?.peakGflops ?? .nan),
                             fractionOfLargeProblemPeak: peak?.largeProblemPeakGflops.map { gflops / $0 },
                             engineBF16ImagesPerSecond: half, bf16SpeedupOverFP32: half.map { $0 / fp32 }, speedups: speedups)
    }
    let runtimes = engines.map { RuntimeEntry(id: $0.id, label: "diffusiond engine \($0.net.precision.rawValue)" + ($0.id == onednnWinograd ? ", oneDNN's Winograd" : ""),
                                              precision: $0.net.precision.rawValue,
                                              version: DaemonVersion.string) }
        + peers.map { RuntimeEntry(id: $0.1.id, label: $0.1.label, precision: $0.1.precision, version: $0.1.version) }
    log("\nsummary (medians of \(options.rounds) interleaved rounds, images/s [min-max]):")
    for t in timings {
        log(String(format: "  %@ batch %4d: %7.0f [%.0f-%.0f]", (runtimes.first { $0.id == t.runtime }?.label ?? t.runtime) as NSString, t.batch,
                   t.medianImagesPerSecond, t.minImagesPerSecond, t.maxImagesPerSecond))
    }
    var result = ThroughputResult(
        network: network, gflopPerImage: flopsPerImage / 1e9, minSecondsPerTiming: options.seconds, rounds: options.rounds,
        blasThreads: ComputeRuntime.blasThreads, dnnlThreads: ComputeRuntime.dnnlThreads, cpu: cpu, peak: peak, runtimes: runtimes,
        timings: timings, rows: rows, notes: notes, classifier: [], classifierNetwork: nil)
    for line in throughputTargets(result) { log("target: " + line) }

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
    result.classifier = classifierRows
    result.classifierNetwork = classifierNetwork
    return result
}

/// A prediction of the stage's run time: every round times each runtime at each batch size for at
/// least `seconds` (plus a warm-up call) and measures the peak; the servers start up first
/// (torch.compile compiles every batch size, in fp32 and bf16: minutes on 2 cores).
func expectedThroughputSeconds(_ options: Options) -> Double {
    let peers = options.torch ? 1.0 + (options.onnx ? 1 : 0) + 1 + (options.compile ? 1 : 0) + (options.bf16 ? 1 + (options.compile ? 1 : 0) : 0) : 0
    let engines = options.bf16 ? 2.0 : 1.0
    let classifierTimings = options.classifier ? 2.0 * Double(options.batches.filter { $0 >= 16 }.count) : 0
    let perRound = Double(options.batches.count) * (engines + peers) * (options.seconds + 0.3) + (options.peak ? 5 : 0)
    let startUp = options.torch ? 20.0 + (options.compile ? (options.bf16 ? 2 : 1) * 40.0 * Double(options.batches.count) : 0) : 0
    return Double(options.rounds) * perRound + startUp + classifierTimings * (options.seconds + 0.3)
}
