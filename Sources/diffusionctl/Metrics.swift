import ArgumentParser
import DiffusionControl
import DiffusionDaemon
import DiffusionEngine
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct MetricsCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "metrics",
            abstract: "FID, KID, precision/recall and class accuracy of a folder of images or of a job.",
            discussion: """
                A folder's PNG and JPEG files (not its subfolders, not contact-sheet.png) are measured; an image \
                carrying a diffusiond record counts towards the class accuracy of the class it asked for. A job \
                (id or name) is measured from its recorded images. Images of any size and 1-4 channels are \
                converted to the features network's input (README, Metrics).
                """)
        @OptionGroup var common: Common
        @Argument(help: "A folder of images, or a job id or name.") var target: String
        @Option(help: "Reference statistics: a file, or a name made by `reference-stats` (default: the features bundle's own).")
        var reference: String?
        @Option(name: .customLong("features-model"), help: "The features bundle (default: the config's metrics.features_model).")
        var featuresModel: String?
        @Option(name: .customLong("min-images"), help: "The smallest N that gets an FID (default: the config's metrics.min_images).")
        var minImages: Int?

        func run() throws {
            KernelSelection.relaunchWithBestKernelsIfNeeded()
            let cfg = try common.loadConfig()
            let images = try QualityCommands.images(of: target) { try common.openStore() }
            let evaluator = try QualityCommands.evaluator(config: cfg, featuresModel: featuresModel, reference: reference, minimumImages: minImages)
            let report = try evaluator.evaluate(images: images.map(\.image), requestedClasses: images.map(\.requestedClass))
            if common.json { print(String(decoding: try report.jsonData(), as: UTF8.self)) } else { print(report.render()) }
        }
    }
}
