import DiffusionEngine
import Foundation
import ModelBundles

/// Why the engine could not run a job.
public enum GenerationError: Error, CustomStringConvertible {
    /// The bundle cannot serve this job (wrong kind, missing table, bad name).
    case unusableModel(String, String)

    public var description: String {
        switch self {
        case .unusableModel(let name, let why): "model '\(name)': \(why)"
        }
    }
}

/// The diffusion engine behind the daemon: bundles loaded on first use (SHA-256 verified) and kept
/// in an LRU cache within the memory budget; batches sampled on a dedicated compute thread.
public final class EngineImageGenerator: ImageGenerator {
    let cache: ModelCache
    let compute = ComputeThread(name: "diffusiond-compute")

    /// A generator over the bundles in `modelsDirectory`, caching at most `cacheBytes` of networks.
    public init(modelsDirectory: String, cacheBytes: Int, threads: Int) {
        cache = ModelCache(root: URL(fileURLWithPath: modelsDirectory, isDirectory: true), budgetBytes: cacheBytes)
        ComputeRuntime.configure(blasThreads: threads, dnnlThreads: threads)
    }

    /// The kernel of the UNet's fp32 3x3 convolutions: the engine's Winograd with its revision, or "onednn".
    public static var winogradKernel: String { ConvolutionKernelChoice.engineWinogradKernel ?? "onednn" }

    public var environment: GeneratorEnvironment {
        GeneratorEnvironment(
            kernel: "onednn+openblas",
            // The 3x3 fp32 convolutions run the engine's own Winograd kernel on AVX-512 CPUs (its revision
            // is part of what fp32 bits depend on), oneDNN's kernels elsewhere.
            kernelVersions: ["onednn": ComputeRuntime.dnnlVersion, "openblas": ComputeRuntime.blasConfig,
                             "winograd": Self.winogradKernel],
            precision: "float32",
            details: ["blas_core": ComputeRuntime.blasCoreName, "blas_threads": "\(ComputeRuntime.blasThreads)",
                      "onednn_threads": "\(ComputeRuntime.dnnlThreads)",
                      // The UNet's images are computed in single-threaded pieces of this many rows.
                      "unet_lane_rows": "\(ADMUNet.laneRows)",
                      "blas_core_best": KernelSelection.current.bestOpenBLASCore ?? "none",
                      "cpu_flags": KernelSelection.current.features.joined(separator: " "),
                      // oneDNN's Winograd blocking follows the cache sizes: with the flags, what fp32 bits depend on.
                      "cpu_model": CPUDescription.current.model, "cpu_caches": CPUDescription.current.cacheSummary],
            cpu: CPUDescription.current.recordName)
    }

    /// The environment with the precision `job` runs in.
    public func environment(for job: JobSpec) -> GeneratorEnvironment {
        var env = environment
        env.precision = job.precision.recordName
        if let kernels = job.precision.convolutionKernels(on: .current) { env.details["bf16_convolutions"] = kernels }
        return env
    }

    public func preload(model: String) async throws -> LoadedModel? {
        let cache = cache
        let (network, loadedNow) = try await compute.run { try cache.network(model) }
        guard loadedNow else { return nil }
        return LoadedModel(name: model, contentHash: network.bundle.contentHash, loadSeconds: network.loadSeconds,
                           bytes: network.bytes)
    }

    public func modelHash(_ model: String) async throws -> String {
        let cache = cache
        return try await compute.run { try cache.network(model).0.bundle.contentHash }
    }

    public func cachedModels() async -> [String] { cache.names }

    public func generate(job: JobSpec, indices: [Int], context: GenerationContext) async throws -> [GeneratedImage] {
        let cache = cache
        return try await compute.run {
            try Self.sample(job: job, indices: indices, context: context, cache: cache)
        }
    }

    /// Samples `indices` of `job` (runs on the compute thread).
    static func sample(job: JobSpec, indices: [Int], context: GenerationContext, cache: ModelCache) throws -> [GeneratedImage] {
        try prepare(job: job, indices: indices, cache: cache).sample(context: context)
    }

    /// A job's pipeline for `indices`, with what its images' records say (runs on the compute thread).
    static func prepare(job: JobSpec, indices: [Int], cache: ModelCache) throws -> PreparedBatch {
        let unet = try cache.network(job.model, head: job.sampler.kind.covarianceHead, precision: job.precision).0
        guard let predictor = unet.predictor else { throw GenerationError.unusableModel(job.model, "not a UNet bundle") }
        let manifest = unet.bundle.manifest
        var classifier: ClassifierGuidanceGradient?
        if job.mode == .classifierGuided {
            let name = job.sampler.classifier ?? "\(job.model)-classifier"
            let loaded = try cache.network(name).0
            guard let c = loaded.classifier else { throw GenerationError.unusableModel(name, "not a classifier bundle") }
            classifier = c
        }
        let plan = try SamplingPlan(job: job, manifest: manifest, indices: indices, gamma: unet.gamma)
        let pipeline = try SamplingPipeline(
            configuration: plan.configuration, predictor: predictor, classifier: classifier, gammaTable: plan.gamma,
            imageShape: ImageShape(channels: job.channels, height: job.height, width: job.width))
        return PreparedBatch(job: job, indices: indices, plan: plan, pipeline: pipeline, chunkSizes: predictor.chunkSizes)
    }

    /// NCHW planes -> interleaved pixels (a no-op for one channel).
    static func interleave(_ planar: [UInt8], channels: Int, plane: Int) -> [UInt8] {
        guard channels > 1 else { return planar }
        var out = [UInt8](repeating: 0, count: planar.count)
        for c in 0 ..< channels { for i in 0 ..< plane { out[i * channels + c] = planar[c * plane + i] } }
        return out
    }
}

/// One job's batch set up for the engine: its plan and pipeline, and the images of a final state.
struct PreparedBatch {
    let job: JobSpec
    let indices: [Int]
    let plan: SamplingPlan
    let pipeline: SamplingPipeline
    let chunkSizes: [Int]

    /// Samples the batch alone, reporting its steps to `context` and stopping when it says so.
    func sample(context: GenerationContext) throws -> [GeneratedImage] {
        let x: Tensor
        do {
            x = try pipeline.generate(
                imageIndices: indices, classes: plan.networkClasses,
                progress: { context.progress(BatchProgress(images: indices.count, completedSteps: $0.completedSteps,
                                                           totalSteps: $0.totalSteps)) },
                isCancelled: context.shouldStop)
        } catch SamplingError.cancelled {
            throw CancellationError()
        }
        return images(x)
    }

    /// The images of the final state `x` [N, C, H, W], with their records' fields.
    func images(_ x: Tensor) -> [GeneratedImage] {
        let total = pipeline.stepCount
        let pixels = x.pixelBytes()
        let perImage = job.channels * job.height * job.width
        let configurationJSON = plan.configurationJSON(pipeline.configuration)
        let evaluations = job.mode == .classifierFree ? 2 * total : total
        // The original timestep the network saw at each step, in sampling order (as diffusers lists them).
        let visited = (0 ..< total).map { String(pipeline.sampler.timestep(at: $0)) }.joined(separator: ",")
        return indices.enumerated().map { n, index in
            let interleaved = EngineImageGenerator.interleave(Array(pixels[n * perImage ..< (n + 1) * perImage]),
                                                              channels: job.channels, plane: job.height * job.width)
            return GeneratedImage(
                index: index, pixels: interleaved, width: job.width, height: job.height, channels: job.channels,
                seed: job.seed, classIndex: job.classFor(index: index)?.index,
                recordFields: ["sampling_configuration": configurationJSON,
                               "network_evaluations": "\(evaluations)",
                               "timesteps": visited,
                               // The network call sizes whose per-image bits the probe found identical here.
                               "chunk_sizes": chunkSizes.map(String.init).joined(separator: ","),
                               "seed_derivation": "Philox4x32-10 keyed by the job seed; counter (element/4, image index, draw); draw 0 is x_T, draw k+1 the noise of chain step k"])
        }
    }
}

/// How a job maps onto the engine: the sampling configuration, the class labels the network sees
/// and the Gamma table that matches them. Public so that the benchmark's engine-alone runs sample
/// exactly what the daemon samples.
public struct SamplingPlan: Sendable {
    public var configuration: SamplingConfiguration
    /// The labels handed to the pipeline: the requested classes, the null class for unconditional
    /// sampling with a conditional network, nil for an unconditional network.
    public var networkClasses: [Int]?
    public var gamma: [Double]?

    public init(job: JobSpec, manifest: BundleManifest, indices: [Int], gamma tables: (unconditional: [Double], conditional: [Double]?)?) throws {
        var c = SamplingConfiguration()
        if let d = manifest.diffusion { c.diffusion = d }
        let s = job.sampler
        c.sampler = s.kind
        if let r = s.respacing { c.respacing = try TimestepRespacing(parsing: r) }
        if let eta = s.eta { c.eta = eta }
        c.ddpmVariance = s.variance
        c.clipDenoised = s.clip
        if let l = s.langevin { c.langevin = l }
        c.snr = s.snr
        c.correctorSteps = s.correctorSteps
        c.nullClass = manifest.nullClass
        c.seed = job.seed
        let conditionalNetwork: Bool = {
            if case .adm(let a)? = manifest.architecture { return a.numClasses != nil }
            return false
        }()
        let requested = indices.map { job.classFor(index: $0)?.index ?? -1 }
        let nullLabels = manifest.nullClass.map { Array(repeating: $0, count: indices.count) }
        var useConditionalGamma = false
        switch job.mode {
        case .classConditional:
            networkClasses = requested
            useConditionalGamma = true
        case .classifierFree:
            c.guidance = .classifierFree
            c.guidanceScale = s.guidanceScale ?? 0
            networkClasses = requested
            useConditionalGamma = true
        case .classifierGuided:
            // A conditional network sees its null class (the classifier alone steers) or, with
            // network_label: requested (the default without a null class), the requested class.
            c.guidance = .classifier
            c.guidanceScale = s.guidanceScale ?? 0
            c.guidedNetworkClass = conditionalNetwork ? (s.networkLabel ?? (manifest.nullClass == nil ? .requested : .null)) : .null
            networkClasses = requested
            if conditionalNetwork && manifest.nullClass == nil && c.guidedNetworkClass == .null {
                throw GenerationError.unusableModel(job.model, "has no null class: under classifier guidance its network sees the requested class (network_label: requested)")
            }
            useConditionalGamma = c.guidedNetworkClass == .requested
        case .unconditional:
            networkClasses = conditionalNetwork ? nullLabels : nil
        }
        if conditionalNetwork && networkClasses == nil {
            throw GenerationError.unusableModel(job.model, "a class-conditional network without a null class cannot sample \(job.mode.rawValue)")
        }
        configuration = c
        gamma = useConditionalGamma ? (tables?.conditional ?? tables?.unconditional) : tables?.unconditional
    }

    /// The resolved configuration as compact JSON, for each image's record.
    func configurationJSON(_ resolved: SamplingConfiguration) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(resolved)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
    }
}
