import DiffusionEngine
import ImageCodecs
import ModelBundles

/// Features and predicted classes of a set of images.
public struct ExtractedFeatures: Sendable, Equatable {
    /// One row of features per image (the network's `features` layer).
    public var features: FeatureMatrix
    /// The feature network's most likely class per image.
    public var predictedClasses: [Int]
}

/// The network of a "features" bundle, evaluated on the engine in fixed batches.
///
/// Every evaluation has exactly `batchRows` rows (the last batch zero-padded), so an image's
/// features do not depend on how many images are measured with it.
public final class FeatureExtractor: @unchecked Sendable {
    /// The bundle the network came from.
    public let bundle: ModelBundle
    /// The network.
    public let network: FeatureCNN
    /// How images become network inputs.
    public let preprocessing: ImagePreprocessing
    /// Rows per network evaluation.
    public static let batchRows = 64

    /// Loads the network of a features bundle (checksums verified by `ModelBundle`).
    public init(bundle: ModelBundle) throws {
        self.bundle = bundle
        network = try bundle.makeFeatureNetwork()
        guard let data = bundle.manifest.data else { throw BundleError.invalidManifest("a features bundle needs 'data' (its input geometry)") }
        guard data.channels == network.inChannels else {
            throw BundleError.invalidManifest("data.channels \(data.channels) but the network takes \(network.inChannels)")
        }
        preprocessing = ImagePreprocessing(channels: data.channels, height: data.height, width: data.width)
    }

    /// Width of the feature vectors.
    public var dimension: Int { network.featureCount }

    /// Features of images already in the network's input form: [N, C, H, W], values in [-1, 1].
    public func features(ofInputs x: Tensor) throws -> ExtractedFeatures {
        let p = preprocessing
        guard x.shape == [x.shape.first ?? 0, p.channels, p.height, p.width], x.shape[0] > 0 else {
            throw MetricsError.invalidInput("inputs of shape \(x.shape), the features network takes [N, \(p.channels), \(p.height), \(p.width)]")
        }
        let n = x.shape[0], rowSize = p.channels * p.height * p.width
        let batch = Tensor(shape: [Self.batchRows, p.channels, p.height, p.width])
        var features = [Float](), predicted = [Int]()
        features.reserveCapacity(n * dimension)
        var start = 0
        while start < n {
            let rows = min(Self.batchRows, n - start)
            batch.fill(0)
            batch.data.update(from: x.data + start * rowSize, count: rows * rowSize)
            let (f, logits) = try network.forward(batch)
            features.append(contentsOf: UnsafeBufferPointer(start: f.data, count: rows * dimension))
            let k = network.logitCount
            for r in 0 ..< rows {
                var best = 0
                for c in 1 ..< k where logits.data[r * k + c] > logits.data[r * k + best] { best = c }
                predicted.append(best)
            }
            start += rows
        }
        return ExtractedFeatures(features: FeatureMatrix(count: n, dimension: dimension, values: features), predictedClasses: predicted)
    }

    /// Features of 8-bit images of any size and channel count (see `ImagePreprocessing`).
    public func features(of images: [RasterImage]) throws -> ExtractedFeatures {
        guard !images.isEmpty else { throw MetricsError.invalidInput("no images to measure") }
        let p = preprocessing
        var inputs = [Float]()
        inputs.reserveCapacity(images.count * p.channels * p.height * p.width)
        for image in images { try p.append(image, to: &inputs) }
        return try features(ofInputs: Tensor(shape: [images.count, p.channels, p.height, p.width], values: inputs))
    }
}
