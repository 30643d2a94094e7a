import Foundation
import ImageCodecs

/// One image produced by a generator.
public struct GeneratedImage: Sendable, Equatable {
    /// The image index within the job (0 ..< totalImages).
    public var index: Int
    /// 8-bit samples, `channels` per pixel (1 or 3), rows packed.
    public var pixels: [UInt8]
    public var width: Int
    public var height: Int
    public var channels: Int
    /// The seed the image's noise came from (normally the job seed; see `JobSpec.seedDerivation`).
    public var seed: UInt64
    /// The class index the image was conditioned on (nil when unconditional).
    public var classIndex: Int?
    /// Extra per-image fields for the generation record (e.g. "model_hash", "precision", "nfe").
    public var recordFields: [String: String]

    public init(index: Int, pixels: [UInt8], width: Int, height: Int, channels: Int, seed: UInt64,
                classIndex: Int?, recordFields: [String: String] = [:]) {
        self.index = index
        self.pixels = pixels
        self.width = width
        self.height = height
        self.channels = channels
        self.seed = seed
        self.classIndex = classIndex
        self.recordFields = recordFields
    }

    public var raster: RasterImage { RasterImage(width: width, height: height, channels: channels, pixels: pixels) }
}

/// How far a generator is through one batch.
public struct BatchProgress: Sendable, Equatable {
    /// Images in the batch.
    public var images: Int
    public var completedSteps: Int
    public var totalSteps: Int

    public init(images: Int, completedSteps: Int, totalSteps: Int) {
        self.images = images
        self.completedSteps = completedSteps
        self.totalSteps = totalSteps
    }
}

/// What a generator may consult while it works.
public struct GenerationContext: Sendable {
    /// True when the job should stop (user cancel or daemon shutdown): a
    /// generator checks it at step boundaries and throws `CancellationError`.
    public var shouldStop: @Sendable () -> Bool
    /// Threads the generator may use.
    public var threads: Int
    /// Called after each sampling step of a batch (on the generator's thread: keep it short).
    public var progress: @Sendable (BatchProgress) -> Void

    public init(shouldStop: @escaping @Sendable () -> Bool = { false }, threads: Int = 1,
                progress: @escaping @Sendable (BatchProgress) -> Void = { _ in }) {
        self.shouldStop = shouldStop
        self.threads = threads
        self.progress = progress
    }
}

/// A model loaded into the generator's cache.
public struct LoadedModel: Sendable, Equatable {
    public var name: String
    /// SHA-256 of the bundle's files (as the bundle manifest records them).
    public var contentHash: String
    public var loadSeconds: Double
    public var bytes: Int
    public init(name: String, contentHash: String, loadSeconds: Double, bytes: Int) {
        self.name = name
        self.contentHash = contentHash
        self.loadSeconds = loadSeconds
        self.bytes = bytes
    }
}

/// The software and kernels behind a generator, for the environment record.
public struct GeneratorEnvironment: Sendable, Equatable {
    /// e.g. "openblas+onednn", or "test".
    public var kernel: String
    public var kernelVersions: [String: String]
    public var precision: String
    public var details: [String: String]
    /// The CPU as image records name it (nil for generators whose bits do not depend on it).
    public var cpu: String?
    public init(kernel: String, kernelVersions: [String: String] = [:], precision: String = "float32",
                details: [String: String] = [:], cpu: String? = nil) {
        self.kernel = kernel
        self.kernelVersions = kernelVersions
        self.precision = precision
        self.details = details
        self.cpu = cpu
    }
}

/// The sampling engine as the daemon sees it. The daemon calls `generate`
/// once per batch with the indices still missing; each returned image must be
/// a pure function of (job spec, index) so that a resumed job produces exactly
/// the images an uninterrupted run would have.
public protocol ImageGenerator: Sendable {
    /// Generates the images `indices` of `job` (in that order).
    func generate(job: JobSpec, indices: [Int], context: GenerationContext) async throws -> [GeneratedImage]

    /// Whether batches of `a` and `b` can be sampled together, one network call a step for both.
    func canShareBatch(_ a: JobSpec, _ b: JobSpec) -> Bool

    /// Generates several jobs' images in one batch: for each member, the images `generate` would
    /// make for it alone, bit for bit, or none when `isCancelled(member)` said so before it ended.
    func generate(members: [BatchMember], context: GenerationContext,
                  isCancelled: @escaping @Sendable (Int) -> Bool) async throws -> [[GeneratedImage]]

    /// Loads a model into the cache ahead of use; nil when it was cached already.
    func preload(model: String) async throws -> LoadedModel?

    /// The content hash of a model (for records), loading it if needed.
    func modelHash(_ model: String) async throws -> String

    /// Names of the models in the cache now.
    func cachedModels() async -> [String]

    var environment: GeneratorEnvironment { get }

    /// The environment as the records of `job`'s images state it (its precision, for one).
    func environment(for job: JobSpec) -> GeneratorEnvironment
}

extension ImageGenerator {
    public func preload(model: String) async throws -> LoadedModel? { nil }
    public func cachedModels() async -> [String] { [] }
    public func canShareBatch(_ a: JobSpec, _ b: JobSpec) -> Bool { false }
    public func environment(for job: JobSpec) -> GeneratorEnvironment { environment }

    /// One member after the other (a generator that cannot share network calls).
    public func generate(members: [BatchMember], context: GenerationContext,
                         isCancelled: @escaping @Sendable (Int) -> Bool) async throws -> [[GeneratedImage]] {
        var out: [[GeneratedImage]] = []
        for (i, m) in members.enumerated() {
            out.append(isCancelled(i) ? [] : try await generate(job: m.job, indices: m.indices, context: context))
        }
        return out
    }
}

/// One job's images in a batch shared with other jobs.
public struct BatchMember: Sendable {
    public var job: JobSpec
    /// The images of `job` to make, in order.
    public var indices: [Int]
    public init(job: JobSpec, indices: [Int]) {
        self.job = job
        self.indices = indices
    }
}

/// Makes images as a pure function of (seed, index, class) without any model:
/// for testing the daemon (resume must be bit-identical, batch size must not
/// matter). Selected by `generator: test` in the config or
/// DIFFUSIOND_TEST_GENERATOR=1 in the environment; never for real work.
public struct DeterministicTestGenerator: ImageGenerator {
    /// Simulated time per image (to let tests interrupt a job mid-way).
    public var delayPerImage: Duration

    public init(delayPerImage: Duration = .zero) { self.delayPerImage = delayPerImage }

    public var environment: GeneratorEnvironment {
        GeneratorEnvironment(kernel: "test", kernelVersions: ["deterministic-test-generator": "1"], precision: "uint8")
    }

    public func modelHash(_ model: String) async throws -> String {
        "test:" + String(Self.mix(model.utf8.reduce(UInt64(1469598103934665603)) { ($0 ^ UInt64($1)) &* 1099511628211 }), radix: 16)
    }

    public func cachedModels() async -> [String] { [] }

    /// Steps it reports per batch (its delay spread over them), as a sampler would.
    public static let steps = 10

    public func generate(job: JobSpec, indices: [Int], context: GenerationContext) async throws -> [GeneratedImage] {
        for step in 1 ... Self.steps {
            if context.shouldStop() { throw CancellationError() }
            if delayPerImage > .zero { try await Task.sleep(for: delayPerImage * indices.count / Self.steps) }
            context.progress(BatchProgress(images: indices.count, completedSteps: step, totalSteps: Self.steps))
        }
        return indices.map { index in
            Self.image(seed: job.seed, index: index, classIndex: job.classFor(index: index)?.index,
                       width: job.width, height: job.height, channels: job.channels)
        }
    }

    /// The image for (seed, index, class): a class-dependent pattern plus seeded noise.
    public static func image(seed: UInt64, index: Int, classIndex: Int?, width: Int, height: Int, channels: Int) -> GeneratedImage {
        var state = mix(seed ^ mix(UInt64(index) &+ 0x9E37_79B9_7F4A_7C15) ^ mix(UInt64(bitPattern: Int64(classIndex ?? -1))))
        var pixels = [UInt8](repeating: 0, count: width * height * channels)
        let c = classIndex ?? 0
        for y in 0 ..< height {
            for x in 0 ..< width {
                state = mix(state)
                let pattern = ((x + c) * 7 + y * (c + 1) * 3) % 256
                for k in 0 ..< channels {
                    let noise = Int((state >> (8 * UInt64(k))) & 0x3F)
                    pixels[(y * width + x) * channels + k] = UInt8((pattern + noise) & 0xFF)
                }
            }
        }
        return GeneratedImage(index: index, pixels: pixels, width: width, height: height, channels: channels,
                              seed: seed, classIndex: classIndex, recordFields: ["generator": "deterministic-test"])
    }

    /// SplitMix64's finaliser.
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
