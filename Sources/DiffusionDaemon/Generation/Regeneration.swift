import DiffusionEngine
import Foundation
import ImageCodecs

/// An image resampled from its embedded record and compared with the file, sample by sample.
public struct RegenerationReport: Codable, Sendable {
    public var path: String
    public var job: String
    public var index: Int
    public var model: String
    /// The model content hash in the record, and that of the bundle in the models folder now.
    public var recordedModelHash: String
    public var currentModelHash: String
    /// Samples (pixels x channels) that differ between the file and the regenerated image.
    public var differingSamples: Int
    public var totalSamples: Int
    /// True when every sample is bit-identical.
    public var identical: Bool
    /// The CPU the record names (nil in records from before records named it), and this one.
    public var recordedCPU: String?
    public var currentCPU: String
    /// The Winograd convolution kernel the record names (`kernel_versions.winograd`; nil in records
    /// from before the engine had its own), and this engine's.
    public var recordedWinograd: String?
    public var currentWinograd: String

    /// Reads `path`, resamples image `index` of the recorded job with the bundles in
    /// `modelsDirectory`, and compares. A JPEG is compared after encoding the regenerated pixels
    /// with the recorded quality (libjpeg is deterministic), a PNG directly.
    /// `progress` is called after each sampling step.
    public static func build(path: String, modelsDirectory: String, threads: Int,
                             progress: @escaping @Sendable (BatchProgress) -> Void = { _ in }) throws -> RegenerationReport {
        let file = try ImageFile.read(path: path)
        guard let json = file.record.json else { throw RegenerationError("\(path) carries no generation record") }
        let record = try GenerationRecord.parse(json)
        ComputeRuntime.configure(blasThreads: threads, dnnlThreads: threads)
        let cache = ModelCache(root: URL(fileURLWithPath: modelsDirectory, isDirectory: true), budgetBytes: .max)
        let currentHash = try cache.network(record.spec.model).0.bundle.contentHash
        let generated = try EngineImageGenerator.sample(job: record.spec, indices: [record.index],
                                                        context: GenerationContext(progress: progress), cache: cache)[0]
        var regenerated = generated.raster
        if file.format == .jpeg {
            let bytes = try ImageFile.encode(regenerated, format: .jpeg, quality: record.spec.output.quality ?? 95,
                                             record: EmbeddedRecord(json: nil, parameters: nil))
            regenerated = try ImageFile.decode(bytes).image
        }
        let a = file.image.pixels, b = regenerated.pixels
        let differing = a.count == b.count ? zip(a, b).reduce(0) { $0 + ($1.0 == $1.1 ? 0 : 1) } : max(a.count, b.count)
        return RegenerationReport(path: path, job: record.job.name, index: record.index, model: record.spec.model,
                                  recordedModelHash: record.model.hash, currentModelHash: currentHash,
                                  differingSamples: differing, totalSamples: a.count, identical: differing == 0,
                                  recordedCPU: record.software.cpu, currentCPU: CPUDescription.current.recordName,
                                  recordedWinograd: record.software.kernelVersions["winograd"],
                                  currentWinograd: EngineImageGenerator.winogradKernel)
    }

    /// A few lines for a terminal.
    public func render() -> String {
        var lines = ["regenerated \(job) image \(index) with model \(model): " +
                     (identical ? "bit-identical (\(totalSamples) samples)" : "\(differingSamples) of \(totalSamples) samples differ")]
        if !identical, recordedCPU != currentCPU {
            lines.append("note: " + (recordedCPU.map { "the image was made on another CPU (\($0)); this is \(currentCPU)" }
                                     ?? "the record does not name the CPU it was made on; this is \(currentCPU)")
                         + ": oneDNN sizes its convolution blocking from the caches, so float32 sums may round otherwise here; "
                         + "regenerate on a CPU like the record's to compare bit for bit")
        }
        if !identical, recordedWinograd != currentWinograd {
            lines.append("note: the image was made with another Winograd convolution kernel ("
                         + (recordedWinograd ?? "oneDNN's: the record names none") + "); this engine runs \(currentWinograd), "
                         + "whose float32 sums round otherwise")
        }
        if recordedModelHash != currentModelHash {
            lines.append("note: the model changed since the image was made (record \(recordedModelHash.prefix(12)), now \(currentModelHash.prefix(12)))")
        }
        return lines.joined(separator: "\n")
    }
}

/// Why an image could not be regenerated.
public struct RegenerationError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
