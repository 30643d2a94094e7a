import ArgumentParser
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

/// `diffusionctl`: argument parsing and wiring only. Reads the database
/// directly, so every read command works while the daemon is down.
@main
struct DiffusionCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diffusionctl",
        abstract: "Inspect and feed diffusiond.",
        version: DaemonVersion.string,
        subcommands: [Status.self, Jobs.self, Show.self, Submit.self, Validate.self, Cancel.self, Models.self, Verify.self,
                      MetricsCommand.self, ReferenceStats.self])

    struct Common: ParsableArguments {
        @Option(name: .shortAndLong, help: ArgumentHelp(
            "The daemon's config file.",
            discussion: "Default: $DIFFUSIOND_CONFIG, else /etc/diffusiond/config.yml when it exists, else ./config.yml."))
        var config: String = DaemonConfig.defaultPath()

        @Option(help: "The state directory (overrides the config's `state`).")
        var state: String?

        @Flag(help: "Print JSON instead of text.")
        var json = false

        func loadConfig() throws -> DaemonConfig {
            if FileManager.default.fileExists(atPath: config) || state == nil {
                do { return try DaemonConfig.load(path: config) } catch {
                    throw ValidationError("\(config): \(error)")
                }
            }
            return DaemonConfig()
        }

        func openStore() throws -> ProvenanceStore {
            var cfg = try loadConfig()
            if let state { cfg.state = state }
            return try ProvenanceStore.openClient(path: cfg.databasePath)
        }

        func emit<T: Encodable>(_ value: T, text: () -> String) throws {
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                enc.keyEncodingStrategy = .convertToSnakeCase
                print(String(decoding: try enc.encode(value), as: UTF8.self))
            } else {
                print(text())
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Daemon liveness, the active job, the queue, recent jobs, cached models.")
        @OptionGroup var common: Common
        func run() throws {
            let report = try StatusReport.build(store: try common.openStore())
            try common.emit(report) { report.render() }
        }
    }

    struct Jobs: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")
        @OptionGroup var common: Common
        @Option(name: .customLong("only"), help: "Only jobs in this state (pending, active, done, failed, canceled).")
        var only: String?
        @Option(help: "At most this many jobs.")
        var limit = 50
        func run() throws {
            let store = try common.openStore()
            var states: [JobState]?
            if let s = only {
                guard let st = JobState(rawValue: s) else { throw ValidationError("unknown state \(s)") }
                states = [st]
            }
            let rows = try store.jobs(states: states, limit: limit).map { StatusReport.summary($0, store: store) }
            try common.emit(rows) {
                rows.isEmpty ? "no jobs" : rows.map { "\($0.id)\t\($0.state)\t\($0.imagesDone)/\($0.images)\t\($0.name)" + ($0.error.map { "\t\($0.split(separator: "\n").first ?? "")" } ?? "") }.joined(separator: "\n")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The full provenance record of a job.")
        @OptionGroup var common: Common
        @Argument(help: "The job id.") var job: Int64
        func run() throws {
            let report = try JobReport.build(store: try common.openStore(), jobID: job)
            try common.emit(report) { report.render() }
        }
    }

    struct Submit: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a job file and put it in the spool atomically.")
        @OptionGroup var common: Common
        @Argument(help: "The job file (YAML or JSON).") var file: String
        func run() throws {
            let cfg = try common.loadConfig()
            let bytes = try FileBytes.read(path: file, limit: cfg.limits.jobFileBytes + 1)
            let validator = JobValidator(config: cfg, catalog: DirectoryModelCatalog(root: cfg.models))
            do {
                _ = try validator.validate(bytes, fileName: file)
            } catch {
                FileHandle.standardError.write(Data("\(file): rejected\n\(error.description)\n".utf8))
                throw ExitCode(65)
            }
            let name = (file as NSString).lastPathComponent
            let queued = try Spool(root: cfg.spool).submit(bytes, name: name)
            try common.emit(["submitted": queued, "spool": cfg.spoolIncoming]) { "submitted \(file) as \(cfg.spoolIncoming)/\(queued)" }
        }
    }

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a job file (or, with --config-file, a config) without submitting.")
        @OptionGroup var common: Common
        @Flag(help: "Validate FILE as a daemon config instead of a job.") var configFile = false
        @Argument(help: "The file to check.") var file: String
        func run() throws {
            if configFile {
                do { _ = try DaemonConfig.load(path: file) } catch {
                    FileHandle.standardError.write(Data("\(file): invalid\n\(error)\n".utf8))
                    throw ExitCode(65)
                }
                try common.emit(["file": file, "valid": "true"]) { "\(file): ok" }
                return
            }
            let cfg = try common.loadConfig()
            let bytes = try FileBytes.read(path: file, limit: cfg.limits.jobFileBytes + 1)
            let validator = JobValidator(config: cfg, catalog: DirectoryModelCatalog(root: cfg.models))
            do {
                let spec = try validator.validate(bytes, fileName: file)
                if common.json { print(spec.jsonString(pretty: true)) } else {
                    print("\(file): ok (\(spec.totalImages) images, \(spec.sampler.kind.jobName), model \(spec.model))")
                    print(spec.jsonString(pretty: true))
                }
            } catch {
                if common.json {
                    try common.emit(error.errors) { "" }
                } else {
                    FileHandle.standardError.write(Data("\(file): invalid\n\(error.description)\n".utf8))
                }
                throw ExitCode(65)
            }
        }
    }

    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a job: a pending one at once, a running one at its next batch boundary.")
        @OptionGroup var common: Common
        @Argument(help: "The job id.") var job: Int64
        func run() throws {
            let outcome = try common.openStore().requestCancel(jobID: job)
            try common.emit(["job": String(job), "outcome": outcome.rawValue]) {
                switch outcome {
                case .canceled: return "job \(job) canceled"
                case .requested: return "job \(job): cancel requested; it stops at the next batch boundary"
                case .alreadyFinished: return "job \(job) has already finished"
                }
            }
        }
    }

    struct Models: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Model bundles available, cached now, and their load history.")
        @OptionGroup var common: Common
        struct Report: Codable {
            var available: [ModelInfo]
            var cached: [String]
            var loads: [ModelLoadRow]
        }
        func run() throws {
            let cfg = try common.loadConfig()
            let available = DirectoryModelCatalog(root: cfg.models).allModels()
            var cached: [String] = [], loads: [ModelLoadRow] = []
            if let store = try? common.openStore() {
                let status = try StatusReport.build(store: store)
                cached = status.cachedModels
                loads = try store.modelLoads(limit: 20)
            }
            let report = Report(available: available, cached: cached, loads: loads)
            try common.emit(report) {
                var out = ["available (\(cfg.models)):"]
                out += available.map { "  \($0.name)  \($0.kind)  \($0.width)x\($0.height)x\($0.channels)  \($0.classes.count) classes" + (cached.contains($0.name) ? "  [cached]" : "") }
                if !loads.isEmpty {
                    out.append("recent loads:")
                    out += loads.map { "  \($0.name)  \($0.contentHash.prefix(16))  \(String(format: "%.2f", $0.loadSeconds)) s" }
                }
                return out.joined(separator: "\n")
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check an image's embedded record and SHA-256 against the database.")
        @OptionGroup var common: Common
        @Flag(help: "Also resample the image from its record and compare the pixels bit for bit.") var regenerate = false
        @Argument(help: "The image file.") var image: String

        struct Combined: Encodable {
            var verify: VerifyReport
            var regeneration: RegenerationReport?
        }

        func run() throws {
            let report = VerifyReport.build(path: image, store: try? common.openStore())
            var regeneration: RegenerationReport?
            if regenerate {
                let cfg = try common.loadConfig()
                regeneration = try RegenerationReport.build(path: image, modelsDirectory: cfg.models, threads: cfg.threads)
            }
            if let regeneration {
                try common.emit(Combined(verify: report, regeneration: regeneration)) {
                    report.render() + "\n" + regeneration.render()
                }
            } else {
                try common.emit(report) { report.render() }
            }
            if !report.ok || regeneration?.identical == false { throw ExitCode(1) }
        }
    }

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
            let cfg = try common.loadConfig()
            let images = try QualityCommands.images(of: target) { try common.openStore() }
            let evaluator = try QualityCommands.evaluator(config: cfg, featuresModel: featuresModel, reference: reference, minimumImages: minImages)
            let report = try evaluator.evaluate(images: images.map(\.image), requestedClasses: images.map(\.requestedClass))
            if common.json { print(String(decoding: try report.jsonData(), as: UTF8.self)) } else { print(report.render()) }
        }
    }

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

        func run() throws {
            guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else { throw ValidationError("--name must be a plain file name, got '\(name)'") }
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
