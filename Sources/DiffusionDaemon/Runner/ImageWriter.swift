import Digests
import Foundation
import ImageCodecs
import Logging
import Provenance

/// Writes one generated image the crash-safe way: encoded with its generation record, renamed
/// into place, its viewing copy beside it, and only then its row. After a crash, `reconcile`
/// makes a job's folder agree with its rows again.
struct ImageWriter: Sendable {
    let store: any JobStore
    let generator: any ImageGenerator
    let host: String
    let logger: Logger

    /// The file name of image `index`.
    static func fileName(spec: JobSpec, index: Int) -> String {
        "\(spec.name)-\(String(format: "%05d", index)).\(spec.output.format.fileExtension)"
    }

    /// Writes image file, viewing copy and row; `threads` goes into the image's record.
    func write(image: GeneratedImage, job: JobRow, spec: JobSpec, models: JobModels, directory: String, threads: Int) throws {
        guard image.width > 0, image.height > 0, image.channels == 1 || image.channels == 3,
              image.pixels.count == image.width * image.height * image.channels else {
            throw ImageCodecError.invalidArgument("image \(image.index) has an invalid geometry")
        }
        let env = generator.environment
        let cls = image.classIndex.flatMap { ci in spec.classes.first { $0.index == ci } }
            ?? image.classIndex.map { ClassRef(index: $0, name: "class \($0)") }
        let createdAt = ISO8601DateFormatter().string(from: Date())
        let record = GenerationRecord(
            job: .init(id: job.id, name: spec.name, fileSHA256: job.contentSHA256), index: image.index, seed: image.seed,
            seedDerivation: image.recordFields["seed_derivation"] ?? JobSpec.seedDerivation, classRef: cls,
            model: models.unet, classifier: models.classifier, spec: spec,
            software: .init(name: "diffusiond", version: DaemonVersion.string, host: host, kernel: env.kernel,
                            kernelVersions: env.kernelVersions, precision: env.precision, threads: threads),
            fields: image.recordFields, createdAt: createdAt)
        let json = record.jsonString()
        let format = spec.output.format
        let bytes = try ImageFile.encode(image.raster, format: format, quality: spec.output.quality ?? 95,
                                         record: EmbeddedRecord(json: json, parameters: record.parametersText))
        let path = directory + "/" + Self.fileName(spec: spec, index: image.index)
        try AtomicFile.write(bytes, to: path)
        // The viewing copy is part of the image: written before the row, so that a
        // crash or a full disk never leaves a recorded image without it.
        if spec.output.upscale > 1 {
            let view = Upscale.nearest(image.raster, factor: spec.output.upscale)
            let viewDir = directory + "/view"
            try FileManager.default.createDirectory(atPath: viewDir, withIntermediateDirectories: true)
            let viewBytes = try ImageFile.encode(view, format: format, quality: spec.output.quality ?? 95,
                                                 record: EmbeddedRecord(json: json, parameters: record.parametersText))
            try AtomicFile.write(viewBytes, to: viewDir + "/" + Self.fileName(spec: spec, index: image.index))
        }
        // The row is written only once the files are in place (and their directories synced).
        try store.recordImage(ImageRow(jobID: job.id, index: image.index, seed: image.seed, classIndex: cls?.index,
                                       className: cls?.name, path: path, format: format.rawValue, width: image.width,
                                       height: image.height, byteSize: bytes.count, sha256: SHA256Hex.of(bytes),
                                       record: json))
    }

    /// Makes the output folder agree with the image rows after a crash:
    /// temporaries are removed (also in view/); rows whose file is missing (or
    /// has another size), or whose viewing copy is missing, are deleted; image
    /// files and viewing copies without a row (renamed into place just before a
    /// crash, row never written) are deleted. The images concerned are then
    /// generated again, identically.
    func reconcile(jobID: Int64, spec: JobSpec, directory: String) throws -> (removedFiles: [String], removedRows: [Int]) {
        let viewDir = directory + "/view"
        AtomicFile.removeTemporaries(in: directory)
        AtomicFile.removeTemporaries(in: viewDir)
        let rows = try store.images(jobID: jobID)
        var staleRows: [Int] = []
        var byName: [String: ImageRow] = [:]
        for row in rows {
            var st = stat()
            let name = (row.path as NSString).lastPathComponent
            if stat(row.path, &st) != 0 || Int(st.st_size) != row.byteSize
                || (spec.output.upscale > 1 && stat(viewDir + "/" + name, &st) != 0) {
                staleRows.append(row.index)
            } else {
                byName[name] = row
            }
        }
        try store.deleteImages(jobID: jobID, indices: staleRows)
        var removed: [String] = []
        let ext = spec.output.format.fileExtension
        for dir in [directory, viewDir] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            for name in names where name.hasPrefix(spec.name + "-") && name.hasSuffix("." + ext) && byName[name] == nil {
                if unlink(dir + "/" + name) == 0 { removed.append(dir == directory ? name : "view/" + name) }
            }
        }
        if !removed.isEmpty || !staleRows.isEmpty {
            try? AtomicFile.syncDirectory(directory)
            logger.notice("reconciled job outputs", metadata: ["job": "\(jobID)", "files_removed": "\(removed.count)",
                                                              "rows_removed": "\(staleRows.count)"])
        }
        return (removed, staleRows)
    }
}

/// The bundles behind a job's images, with their content hashes, as each record names them.
struct JobModels: Sendable {
    var unet: GenerationRecord.ModelRef
    var classifier: GenerationRecord.ModelRef?
}
