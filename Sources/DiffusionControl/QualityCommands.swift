import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import ModelBundles
import Provenance

/// `diffusionctl metrics` and `diffusionctl reference-stats`: measuring any folder or job, and
/// building reference statistics from real images.
public enum QualityCommands {
    /// Where named references live: `<state>/references/<name>.safetensors`.
    public static func referencesDirectory(_ config: DaemonConfig) -> String { (config.state as NSString).appendingPathComponent("references") }

    /// The reference `name`: nil for the features bundle's own; a path to a reference file; or a
    /// name made by `reference-stats` under the state directory.
    public static func reference(_ name: String?, config: DaemonConfig) throws -> ReferenceSet? {
        guard let name else { return nil }
        if FileManager.default.fileExists(atPath: name) { return try ReferenceSet(contentsOf: URL(fileURLWithPath: name)) }
        let dir = referencesDirectory(config)
        let path = (dir as NSString).appendingPathComponent(name + ".safetensors")
        guard !name.contains("/"), FileManager.default.fileExists(atPath: path) else {
            let known = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
                .filter { $0.hasSuffix(".safetensors") }.map { String($0.dropLast(12)) }.sorted()
            throw MetricsError.invalidReference("no reference '\(name)': not a file, and not in \(dir) (known: \(known.isEmpty ? "none" : known.joined(separator: ", ")); make one with `diffusionctl reference-stats`)")
        }
        return try ReferenceSet(contentsOf: URL(fileURLWithPath: path))
    }

    /// The evaluator for the config's features bundle (or `featuresModel`) against `reference`.
    public static func evaluator(config: DaemonConfig, featuresModel: String?, reference: String?, minimumImages: Int?) throws -> QualityEvaluator {
        let bundle = URL(fileURLWithPath: config.models).appendingPathComponent(featuresModel ?? config.metrics.featuresModel, isDirectory: true)
        return try QualityEvaluator(featuresBundle: bundle, reference: try self.reference(reference, config: config),
                                    minimumImagesForFID: minimumImages ?? config.metrics.minImages)
    }

    /// The images of `target`: a folder (its PNG/JPEG files; classes from their embedded records)
    /// or a job id / job name in the database (its recorded images and their classes).
    public static func images(of target: String, store: () throws -> any JobStore) throws -> [ImageSources.LabelledImage] {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory), isDirectory.boolValue {
            let files = try ImageSources.imageFiles(in: target)
            guard !files.isEmpty else { throw MetricsError.invalidInput("no PNG or JPEG files in \(target)") }
            return try ImageSources.readImages(paths: files)
        }
        let db = try store()
        let job: JobRow
        if let id = Int64(target), let row = try db.job(id: id) {
            job = row
        } else if let row = try db.jobs(states: nil, limit: 100_000).first(where: { $0.name == target }) {
            job = row
        } else {
            throw MetricsError.invalidInput("'\(target)' is neither a folder nor a job id or name in the database")
        }
        let rows = try db.images(jobID: job.id)
        guard !rows.isEmpty else { throw MetricsError.invalidInput("job \(job.id) (\(job.name)) has no recorded images") }
        return try ImageSources.readImages(paths: rows.map(\.path)).enumerated().map { i, image in
            var labelled = image
            labelled.requestedClass = rows[i].classIndex
            return labelled
        }
    }

    /// Features (and labels) of the real images in `sources`: folders of PNG/JPEG files or IDX
    /// image files; `labels` are IDX label files matched to the IDX image files in order.
    public static func realImages(sources: [String], labels: [String]) throws -> (images: [RasterImage], labels: [Int]?) {
        var images: [RasterImage] = [], classes: [Int?] = []
        for source in sources {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: source, isDirectory: &isDirectory) else {
                throw MetricsError.invalidInput("\(source): no such file or folder")
            }
            if isDirectory.boolValue {
                let read = try ImageSources.readImages(paths: try ImageSources.imageFiles(in: source))
                images += read.map(\.image)
                classes += read.map(\.requestedClass)
            } else {
                let read = try ImageSources.readIDXImages(path: source)
                images += read
                classes += Array(repeating: nil, count: read.count)
            }
        }
        if !labels.isEmpty {
            let all = try labels.flatMap { try ImageSources.readIDXLabels(path: $0) }
            guard all.count == images.count else {
                throw MetricsError.invalidInput("\(all.count) labels in \(labels.joined(separator: ", ")) for \(images.count) images")
            }
            return (images, all)
        }
        let known = classes.compactMap { $0 }
        return (images, known.count == images.count ? known : nil)
    }
}

/// Opens bundles named in the config.
public enum ModelBundleLoader {
    /// The features bundle `name` (default: the config's metrics.features_model), checksums verified.
    public static func features(config: DaemonConfig, name: String?) throws -> ModelBundle {
        try ModelBundle(directory: URL(fileURLWithPath: config.models).appendingPathComponent(name ?? config.metrics.featuresModel, isDirectory: true))
    }
}
