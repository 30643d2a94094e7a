import DiffusionEngine
import Foundation
import ModelBundles

/// What FID, KID and precision/recall compare generated images with: statistics of a real image
/// set in a features network's space, a sample of its feature vectors, and optionally a held-out
/// real set that gives the data floor (the metrics of real images at the same N).
///
/// Tensors of a reference file (safetensors): `all.mean` [d] and `all.cov` [d, d] (float64),
/// `class<i>.mean` / `class<i>.cov` per class, `sample.features` [n, d] (float32) with
/// `sample.labels`, and `floor.features` / `floor.labels` for the data floor.
public struct ReferenceSet: Sendable {
    /// A name for reports ("fashion-mnist-features/train", or a file's name).
    public var name: String
    /// Statistics of every reference image.
    public var all: FeatureStatistics
    /// Statistics per class, by class index.
    public var classes: [Int: FeatureStatistics]
    /// A sample of reference feature vectors (KID, precision/recall).
    public var sample: FeatureMatrix
    /// Held-out real feature vectors, in the order their prefixes are taken, with their labels.
    public var floor: (features: FeatureMatrix, labels: [Int])?

    /// Tensor names of a reference file.
    enum Key {
        static let mean = "all.mean", covariance = "all.cov", sample = "sample.features", sampleLabels = "sample.labels"
        static let floor = "floor.features", floorLabels = "floor.labels"
        static func classMean(_ c: Int) -> String { "class\(c).mean" }
        static func classCovariance(_ c: Int) -> String { "class\(c).cov" }
    }

    /// A reference from its parts.
    public init(name: String, all: FeatureStatistics, classes: [Int: FeatureStatistics], sample: FeatureMatrix,
                floor: (features: FeatureMatrix, labels: [Int])?) {
        self.name = name
        self.all = all
        self.classes = classes
        self.sample = sample
        self.floor = floor
    }

    /// Reads a reference file (what `write(to:)` and the features bundles' `reference.safetensors` hold).
    public init(name: String, file: SafeTensors) throws {
        func need(_ key: String) throws {
            guard file.names.contains(key) else { throw MetricsError.invalidReference("'\(name)' has no tensor '\(key)'") }
        }
        try need(Key.mean); try need(Key.covariance); try need(Key.sample)
        let mean = try file.doubles(Key.mean), d = mean.count
        func statistics(_ meanKey: String, _ covKey: String, count: Int) throws -> FeatureStatistics {
            let m = try file.doubles(meanKey), cov = try file.doubles(covKey)
            guard m.count == d, cov.count == d * d else { throw MetricsError.invalidReference("'\(name)': \(meanKey) / \(covKey) do not have \(d) / \(d * d) values") }
            return FeatureStatistics(count: count, mean: m, covariance: SymmetricMatrix(dimension: d, values: cov))
        }
        func matrix(_ key: String) throws -> FeatureMatrix {
            let v = try file.floats(key)
            guard v.count % d == 0, !v.isEmpty else { throw MetricsError.invalidReference("'\(name)': \(key) is not a matrix of \(d)-d rows") }
            return FeatureMatrix(count: v.count / d, dimension: d, values: v)
        }
        let counts = (try? file.integers("class_counts")) ?? []
        var classes: [Int: FeatureStatistics] = [:]
        for c in 0 ..< 1000 where file.names.contains(Key.classMean(c)) {
            classes[c] = try statistics(Key.classMean(c), Key.classCovariance(c), count: c < counts.count ? counts[c] : 0)
        }
        let total = (try? file.integers("count").first) ?? nil
        let sample = try matrix(Key.sample)
        var floor: (FeatureMatrix, [Int])? = nil
        if file.names.contains(Key.floor) {
            let f = try matrix(Key.floor)
            let labels = file.names.contains(Key.floorLabels) ? try file.integers(Key.floorLabels) : []
            guard labels.isEmpty || labels.count == f.count else { throw MetricsError.invalidReference("'\(name)': floor.labels has \(labels.count) entries for \(f.count) rows") }
            floor = (f, labels)
        }
        self.init(name: name, all: try statistics(Key.mean, Key.covariance, count: total ?? sample.count),
                  classes: classes, sample: sample, floor: floor)
    }

    /// The reference of a features bundle (its model.json `reference.file`, normally reference.safetensors).
    public init(bundle: ModelBundle) throws {
        let info = try FeaturesBundleInfo(bundle: bundle)
        try self.init(name: "\(bundle.manifest.name)/\(info.reference.source ?? "reference")", file: try bundle.safeTensors(info.reference.file))
        all = FeatureStatistics(count: info.reference.images, mean: all.mean, covariance: all.covariance)
        for (c, n) in info.reference.classCounts ?? [:] {
            if let k = Int(c), let s = classes[k] { classes[k] = FeatureStatistics(count: n, mean: s.mean, covariance: s.covariance) }
        }
    }

    /// Reads a reference file written by `write(to:)`.
    public init(contentsOf url: URL) throws {
        guard let bytes = try? Data(contentsOf: url) else { throw MetricsError.invalidReference("cannot read \(url.path)") }
        try self.init(name: url.deletingPathExtension().lastPathComponent, file: try SafeTensors(bytes: bytes))
    }

    /// Width of the feature vectors.
    public var dimension: Int { all.mean.count }

    /// The tensors of this reference as a safetensors file (float64 statistics, float32 samples).
    public func safeTensorsBytes() throws -> Data {
        var tensors: [String: SafeTensorsValue] = [
            Key.mean: .f64(all.mean, shape: [dimension]),
            Key.covariance: .f64(all.covariance.values, shape: [dimension, dimension]),
            Key.sample: .f32(sample.values, shape: [sample.count, dimension]),
            "count": .i64([all.count], shape: [1]),
        ]
        let maxClass = classes.keys.max() ?? -1
        if maxClass >= 0 { tensors["class_counts"] = .i64((0 ... maxClass).map { classes[$0]?.count ?? 0 }, shape: [maxClass + 1]) }
        for (c, s) in classes {
            tensors[Key.classMean(c)] = .f64(s.mean, shape: [dimension])
            tensors[Key.classCovariance(c)] = .f64(s.covariance.values, shape: [dimension, dimension])
        }
        if let floor {
            tensors[Key.floor] = .f32(floor.features.values, shape: [floor.features.count, dimension])
            if !floor.labels.isEmpty { tensors[Key.floorLabels] = .i64(floor.labels, shape: [floor.labels.count]) }
        }
        return SafeTensorsValue.encode(tensors)
    }
}

/// The fields of a features bundle's model.json that the metrics read.
public struct FeaturesBundleInfo: Decodable, Sendable {
    /// model.json "reference".
    public struct Reference: Decodable, Sendable {
        /// The reference file in the bundle.
        public var file: String
        /// Images behind the statistics.
        public var images: Int
        /// Images per class, by class index as a string.
        public var classCounts: [String: Int]?
        /// Where the images came from ("train split").
        public var source: String?
        /// FID of the held-out real images against the reference, by N, as recorded at export.
        public var dataFloorFID: [String: Double]?

        enum CodingKeys: String, CodingKey {
            case file, images, source
            case classCounts = "class_counts", dataFloorFID = "data_floor_fid"
        }
    }
    /// model.json "recipe": only the test accuracy is read.
    public struct Recipe: Decodable, Sendable {
        /// The network's class accuracy on the held-out real images.
        public var testAccuracy: Double?
        enum CodingKeys: String, CodingKey { case testAccuracy = "test_accuracy" }
    }
    public var reference: Reference
    public var recipe: Recipe?

    /// Reads the bundle's model.json.
    public init(bundle: ModelBundle) throws {
        do { self = try JSONDecoder().decode(FeaturesBundleInfo.self, from: try bundle.read("model.json")) } catch let e as BundleError {
            throw e
        } catch {
            throw BundleError.invalidManifest("features bundle '\(bundle.manifest.name)': \(error)")
        }
    }
}
