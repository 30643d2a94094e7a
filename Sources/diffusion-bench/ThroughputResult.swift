// What the throughput stage records (BENCHMARKS.md section 1): every runtime's images per second
// at every batch size, round by round, their medians and spread, the measured peak, the CPU.
import DiffusionEngine
import Foundation

/// One runtime at one batch size over the interleaved rounds.
struct RuntimeTiming: Codable {
    /// "engine-fp32", "engine-bf16" or a peer's id.
    var runtime: String
    var batch: Int
    /// Images per second of each round (the round's median call), in round order.
    var roundsImagesPerSecond: [Double]
    var medianImagesPerSecond: Double
    var minImagesPerSecond: Double
    var maxImagesPerSecond: Double
    /// The fastest single call of all rounds.
    var bestCallImagesPerSecond: Double

    init(runtime: String, batch: Int, rounds: [(best: Double, median: Double)]) {
        self.runtime = runtime
        self.batch = batch
        roundsImagesPerSecond = rounds.map { Double(batch) / $0.median }
        let (median, sorted) = medianRound(roundsImagesPerSecond) { $0 }
        medianImagesPerSecond = median
        minImagesPerSecond = sorted.first ?? .nan
        maxImagesPerSecond = sorted.last ?? .nan
        bestCallImagesPerSecond = Double(batch) / (rounds.map(\.best).min() ?? .nan)
    }
}

/// A runtime of the comparison.
struct RuntimeEntry: Codable {
    var id: String
    var label: String
    var precision: String
    var version: String
}

/// The engine at one batch size against the peers (every figure a median over the rounds).
struct ThroughputRow: Codable {
    var batch: Int
    var engineImagesPerSecond: Double
    var engineGflops: Double
    /// The engine's fp32 GFLOP/s over the median fp32 peak.
    var fractionOfPeak: Double
    /// The same over `PeakResult.largeProblemPeakGflops`.
    var fractionOfLargeProblemPeak: Double?
    var engineBF16ImagesPerSecond: Double?
    var bf16SpeedupOverFP32: Double?
    /// The engine's median over each peer's median, by peer id (fp32 against fp32, bf16 against bf16).
    var speedups: [String: Double]
}

struct ClassifierThroughputRow: Codable {
    var batch: Int
    var logitsImagesPerSecond: Double
    var logitsAndGradientImagesPerSecond: Double
}

/// The machine's peak, measured in every round: medians, and each round's figures.
struct PeakResult: Codable {
    var sgemmGflops: Double
    var convolutionDirectGflops: Double
    var convolutionWinogradGflops: Double
    /// The same Winograd convolution as one single-threaded convolution per thread, all at once,
    /// each over its share of the batch (how the UNet's lanes run).
    var convolutionWinogradLanesGflops: Double
    /// The same Winograd kernel, one single-threaded convolution per thread, on problems that stay in
    /// each core's cache (8 images per thread at 28x28 x 64 and at 8x8 x 128 channels; the faster).
    var convolutionWinogradCacheResidentGflops: Double?
    /// The engine's own Winograd kernel, one single-threaded convolution per thread, on the large
    /// problem and on the cache-resident ones (nil on CPUs without AVX-512 and in older results).
    var engineWinogradLanesGflops: Double?
    var engineWinogradCacheResidentGflops: Double?
    /// The fastest of the fp32 figures: the "measured peak" (median of the rounds' peaks).
    var peakGflops: Double
    var roundsPeakGflops: [Double]
    /// The fastest figure on the 64 -> 64, 32x32, batch-64 problem alone (the peak as the issue measured it).
    var largeProblemPeakGflops: Double?
    /// The same direct convolution with bfloat16 input and weights (nil where the CPU has no bf16).
    var convolutionBF16Gflops: Double?
    /// Each figure of a round is the fastest of this many calls (nil in results from before it was recorded).
    var callsPerFigure: Int?
}

/// The CPU the figures come from.
struct CPUReport: Codable {
    var model: String
    /// The feature flags that decide the kernels (as /proc/cpuinfo names them).
    var flags: [String]
    var openblasCore: String
    /// The kernels of the UNet's 3x3 convolutions in fp32 and bf16 (the engine's own Winograd or oneDNN's).
    var convolutionKernels: [String: String]
}

struct ThroughputResult: Codable {
    var network: String
    var gflopPerImage: Double
    var minSecondsPerTiming: Double
    var rounds: Int
    var blasThreads: Int
    var dnnlThreads: Int
    var cpu: CPUReport
    var peak: PeakResult?
    var runtimes: [RuntimeEntry]
    var timings: [RuntimeTiming]
    var rows: [ThroughputRow]
    var notes: [String]
    var classifier: [ClassifierThroughputRow]
    var classifierNetwork: String?
}

/// The targets at batch 64 and 16, as lines for the log.
func throughputTargets(_ r: ThroughputResult) -> [String] {
    func median(_ id: String, _ batch: Int) -> Double? { r.timings.first { $0.runtime == id && $0.batch == batch }?.medianImagesPerSecond }
    var lines: [String] = []
    let onnx = r.runtimes.first { $0.id.hasPrefix("onnxruntime") }
    let torch2 = r.runtimes.filter { $0.id.hasPrefix("pytorch-2") && $0.precision == "fp32" }
    if let at64 = r.rows.first(where: { $0.batch == 64 }) {
        lines.append(String(format: "batch 64: %.0f %% of the measured fp32 peak (target 60 %%)", 100 * at64.fractionOfPeak)
                     + (at64.fractionOfLargeProblemPeak.map { String(format: "; %.0f %% of the 64->64 32x32 batch-64 problem's", 100 * $0) } ?? ""))
        if let onnx, let s = at64.speedups[onnx.id] { lines.append(String(format: "batch 64: %.2fx %@ (target 1.5x)", s, onnx.label)) }
        let fastest = torch2.max { (median($0.id, 64) ?? 0) < (median($1.id, 64) ?? 0) }
        if let fastest, let s = at64.speedups[fastest.id] { lines.append(String(format: "batch 64: %.2fx %@, the faster PyTorch 2 (target 2x)", s, fastest.label)) }
        if let s = at64.bf16SpeedupOverFP32 { lines.append(String(format: "batch 64: bf16 %.2fx fp32 (target 2x on an AMX machine; this one %@)", s, r.cpu.flags.contains("amx_bf16") ? "has AMX" : "has no AMX")) }
    }
    if let onnx, let s = r.rows.first(where: { $0.batch == 16 })?.speedups[onnx.id] { lines.append(String(format: "batch 16: %.2fx %@ (target 1.2x)", s, onnx.label)) }
    return lines
}
