import DiffusionEngine
import Digests
import Foundation

/// Computes a UNet bundle's Analytic-DPM Gamma tables with the engine and writes them into the
/// bundle: `gamma.safetensors` ("gamma": null class, "gamma_conditional": each image's own class,
/// float64, one entry per original timestep) and model.json's `analytic_dpm` record and file hash.
///
/// Resumable: the partial sums are saved atomically to `progressPath` every few timesteps, keyed
/// by the SHA-256 of the weights, the image count and the seed; a run that finds a matching
/// progress file continues from it, bit-identical to a run without interruption.
public struct GammaTableComputation {
    /// The bundle folder.
    public let bundle: ModelBundle
    /// Images per timestep (a prefix of the data set order given).
    public let imagesPerTimestep: Int
    /// Seed of the noise draws.
    public let seed: UInt64
    /// Where partial sums live between runs.
    public let progressPath: String

    /// Creates the computation; the progress file defaults to `<bundle>/.gamma-progress.safetensors`.
    public init(bundle: ModelBundle, imagesPerTimestep: Int, seed: UInt64 = 2024, progressPath: String? = nil) {
        self.bundle = bundle
        self.imagesPerTimestep = imagesPerTimestep
        self.seed = seed
        self.progressPath = progressPath ?? bundle.directory.appendingPathComponent(".gamma-progress.safetensors").path
    }

    /// What a run reports as it goes: timesteps done of the total, images evaluated, seconds so far.
    public struct Progress: Sendable {
        public var timestepsDone: Int
        public var timesteps: Int
        public var networkEvaluations: Int
        public var wallSeconds: Double
    }

    /// Runs until every timestep has `imagesPerTimestep` images or `timeLimit` seconds pass; returns
    /// true when the tables are complete and written into the bundle.
    public func run(images: Tensor, labels: [Int], timeLimit: Double = .infinity, saveEvery: Int = 10,
                    progress: (Progress) -> Void = { _ in }) throws -> Bool {
        let manifest = bundle.manifest
        guard manifest.kind == "unet", let settings = manifest.diffusion else {
            throw BundleError.invalidManifest("Gamma tables are computed for unet bundles with diffusion settings")
        }
        guard images.shape.count == 4, images.shape[0] >= imagesPerTimestep, labels.count >= imagesPerTimestep else {
            throw BundleError.invalidManifest("Gamma: \(imagesPerTimestep) images per timestep asked, \(labels.count) given")
        }
        let perImage = images.count / images.shape[0]
        let subset = Tensor(shape: [imagesPerTimestep] + images.shape.dropFirst())
        subset.data.update(from: images.data, count: imagesPerTimestep * perImage)
        let network = UNetNoisePredictor(try bundle.makeUNet())
        let estimator = try GammaEstimator(network: network, settings: settings, images: subset,
                                           labels: Array(labels.prefix(imagesPerTimestep)), nullClass: manifest.nullClass, seed: seed)
        let key = progressKey()
        var (sums, previousWall) = loadProgress(key: key, timesteps: settings.steps, conditional: manifest.nullClass != nil)
            ?? (GammaEstimator.Sums(timesteps: settings.steps, conditional: manifest.nullClass != nil), 0)
        let started = Date()
        var wall: Double { previousWall + Date().timeIntervalSince(started) }
        let block = 64
        let passes = manifest.nullClass != nil ? 2 : 1
        var evaluations = 0
        for t in 0 ..< settings.steps where sums.counts[t] < imagesPerTimestep {
            while sums.counts[t] < imagesPerTimestep {
                let lo = sums.counts[t]
                try estimator.accumulate(timestep: t, images: lo ..< min(lo + block, imagesPerTimestep), into: &sums)
                evaluations += passes * (sums.counts[t] - lo)
            }
            let done = sums.counts.filter { $0 >= imagesPerTimestep }.count
            if t % saveEvery == saveEvery - 1 || done == settings.steps {
                try saveProgress(sums, key: key, wall: wall)
            }
            progress(Progress(timestepsDone: done, timesteps: settings.steps, networkEvaluations: evaluations, wallSeconds: wall))
            if Date().timeIntervalSince(started) > timeLimit {
                try saveProgress(sums, key: key, wall: wall)
                return false
            }
        }
        try writeTables(sums, wall: wall)
        try? FileManager.default.removeItem(atPath: progressPath)
        return true
    }

    private func progressKey() -> [String: String] {
        ["weights_sha256": bundle.manifest.files["model.safetensors"] ?? "", "images_per_timestep": String(imagesPerTimestep),
         "seed": String(seed)]
    }

    private func loadProgress(key: [String: String], timesteps: Int, conditional: Bool) -> (GammaEstimator.Sums, Double)? {
        guard let data = FileManager.default.contents(atPath: progressPath), let st = try? SafeTensors(bytes: data),
              key.allSatisfy({ st.metadata[$0.key] == $0.value }),
              let unconditional = try? st.doubles("sums.unconditional"), unconditional.count == timesteps,
              let counts = try? st.integers("counts"), counts.count == timesteps else { return nil }
        var sums = GammaEstimator.Sums(timesteps: timesteps, conditional: conditional)
        sums.unconditional = unconditional
        sums.counts = counts
        if conditional {
            guard let c = try? st.doubles("sums.conditional"), c.count == timesteps else { return nil }
            sums.conditional = c
        }
        return (sums, Double(st.metadata["wall_seconds"] ?? "0") ?? 0)
    }

    private func saveProgress(_ sums: GammaEstimator.Sums, key: [String: String], wall: Double) throws {
        var tensors: [String: SafeTensorsValue] = [
            "sums.unconditional": .f64(sums.unconditional, shape: [sums.counts.count]),
            "counts": .i64(sums.counts, shape: [sums.counts.count])]
        if let c = sums.conditional { tensors["sums.conditional"] = .f64(c, shape: [c.count]) }
        var metadata = key
        metadata["wall_seconds"] = String(wall)
        try Self.atomicWrite(SafeTensorsValue.encode(tensors, metadata: metadata), to: progressPath)
    }

    private func writeTables(_ sums: GammaEstimator.Sums, wall: Double) throws {
        let (unconditional, conditional) = sums.tables
        var tensors: [String: SafeTensorsValue] = ["gamma": .f64(unconditional, shape: [unconditional.count])]
        if let conditional { tensors["gamma_conditional"] = .f64(conditional, shape: [conditional.count]) }
        let data = SafeTensorsValue.encode(tensors)
        let dir = bundle.directory
        try Self.atomicWrite(data, to: dir.appendingPathComponent("gamma.safetensors").path)
        let manifestURL = dir.appendingPathComponent("model.json")
        guard var json = try JSONSerialization.jsonObject(with: Data(contentsOf: manifestURL)) as? [String: Any],
              var files = json["files"] as? [String: Any] else {
            throw BundleError.invalidManifest("model.json is not a JSON object with files")
        }
        files["gamma.safetensors"] = SHA256Hex.of(data)
        json["files"] = files
        var tables: [String: String] = ["gamma": "null class (unconditional)"]
        if conditional != nil { tables["gamma_conditional"] = "true class of each image" }
        json["analytic_dpm"] = [
            "file": "gamma.safetensors", "images_per_timestep": imagesPerTimestep, "noise_draws_per_image": 1,
            "wall_seconds": Int(wall.rounded()), "tables": tables, "seed": Int(seed),
            "computed_by": "diffusionctl gamma-table (the Swift engine, \(ComputeRuntime.summary))",
            "noise": "Philox 4x32-10 normals keyed by the seed; image = data set index, draw = timestep",
        ] as [String: Any]
        let out = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try Self.atomicWrite(out + Data("\n".utf8), to: manifestURL.path)
    }

    static func atomicWrite(_ data: Data, to path: String) throws {
        let tmp = path + ".tmp-\(getpid())"
        try data.write(to: URL(fileURLWithPath: tmp))
        let fd = open(tmp, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        guard rename(tmp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: tmp)
            throw BundleError.invalidManifest("cannot write \(path): \(reason)")
        }
    }
}
