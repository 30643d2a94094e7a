import DiffusionEngine
import Foundation
import ImageCodecs
import Metrics
import ModelBundles

/// Paths and shared objects of the metric tests.
enum MetricsFixtures {
    /// The repository root.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    /// Tests/Fixtures/metrics.
    static let folder = root.appendingPathComponent("Tests/Fixtures/metrics")
    /// The shipped features bundle.
    static let featuresBundle = root.appendingPathComponent("models/fashion-mnist-features")
    /// The Fashion-MNIST test split of the Debian package dataset-fashion-mnist.
    static let testImagesIDX = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    static let testLabelsIDX = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"

    static func safeTensors(_ relative: String) throws -> SafeTensors {
        try SafeTensors(bytes: try Data(contentsOf: folder.appendingPathComponent(relative)))
    }

    /// The shipped features network with its reference (loaded once).
    static let evaluator: QualityEvaluator = {
        try! QualityEvaluator(featuresBundle: featuresBundle)
    }()

    /// The 10,000 test images, decoded once.
    static let testImages: [RasterImage] = {
        try! ImageSources.readIDXImages(path: testImagesIDX)
    }()

    /// `|a - b| / max(|b|, floor)`.
    static func relative(_ a: Double, _ b: Double, floor: Double = 1e-12) -> Double { abs(a - b) / max(abs(b), floor) }
}
