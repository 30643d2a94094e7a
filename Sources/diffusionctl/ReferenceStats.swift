import ArgumentParser
import DiffusionControl
import DiffusionDaemon
import DiffusionEngine
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct ReferenceStats: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reference-stats",
            abstract: "Build reference statistics from real images (folders of PNG/JPEG files or IDX files).",
            discussion: """
                Writes <state>/references/NAME.safetensors (or --output): the mean and covariance of the features \
                (float64), per class when labels are known (--labels IDX files, or the images' records), a sample \
                of up to 10,000 feature vectors, and, with --floor, held-out real images that give the data floor. \
                Use it with `diffusionctl metrics --reference NAME`.
                """)
        @OptionGroup var common: Common
        @Argument(help: "Folders of images or IDX image files (gzip or not).") var sources: [String]
        @Option(help: "The reference's name.") var name: String
        @Option(help: "IDX label files, one per IDX image file, in the same order.") var labels: [String] = []
        @Option(help: "Held-out real images (folder or IDX file) for the data floor.") var floor: String?
        @Option(name: .customLong("floor-labels"), help: "An IDX label file for --floor.") var floorLabels: String?
        @Option(help: "Write here instead of <state>/references/NAME.safetensors.") var output: String?
        @Option(name: .customLong("features-model"), help: "The features bundle (default: the config's metrics.features_model).")
        var featuresModel: String?

        func validate() throws {
            guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else { throw ValidationError("--name must be a plain file name, got '\(name)'") }
        }

        func run() throws {
            KernelSelection.relaunchWithBestKernelsIfNeeded()
            let cfg = try common.loadConfig()
            let bundle = try ModelBundleLoader.features(config: cfg, name: featuresModel)
            let extractor = try FeatureExtractor(bundle: bundle)
            let real = try QualityCommands.realImages(sources: sources, labels: labels)
            let features = try extractor.features(of: real.images).features
            var floorSet: (FeatureMatrix, [Int])? = nil
            if let floor {
                let held = try QualityCommands.realImages(sources: [floor], labels: floorLabels.map { [$0] } ?? [])
                floorSet = (try extractor.features(of: held.images).features, held.labels ?? [])
            }
            let reference = try ReferenceSet.build(name: name, features: features, labels: real.labels, floor: floorSet)
            let path = output ?? (QualityCommands.referencesDirectory(cfg) as NSString).appendingPathComponent(name + ".safetensors")
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try AtomicFile.write([UInt8](try reference.safeTensorsBytes()), to: path)
            struct Summary: Encodable { var name: String, path: String, images: Int, dimension: Int, classes: [Int], sample: Int, floorImages: Int? }
            let summary = Summary(name: name, path: path, images: features.count, dimension: features.dimension,
                                  classes: reference.classes.keys.sorted(), sample: reference.sample.count, floorImages: floorSet?.0.count)
            try common.emit(summary) {
                "reference '\(name)': \(features.count) images, \(features.dimension)-d features of \(bundle.manifest.name), " +
                    "\(reference.classes.count) classes, sample of \(reference.sample.count)" +
                    (floorSet.map { ", data floor from \($0.0.count) held-out images" } ?? ", no data floor (no --floor)") + "\nwritten to \(path)"
            }
        }
    }
}
