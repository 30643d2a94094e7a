import Digests
import Foundation
import ImageCodecs
import Logging
import Provenance

/// Writes one generated image the crash-safe way: encoded with its generation record, linked
/// into place, its viewing copy beside it, and only then its row, under the claim's lease. After a
/// crash, `reconcile` makes the claim's part of the job's folder agree with its rows again.
struct ImageWriter: Sendable {
    let store: any JobStore
    let generator: any ImageGenerator
    let host: String
    let logger: Logger

    /// The file name of image `index`.
    static func fileName(spec: JobSpec, index: Int) -> String {
        "\(spec.name)-\(String(format: "%05d", index)).\(spec.output.format.fileExtension)"
    }

    /// Writes image file, viewing copy and row under `claim`; `threads` goes into the image's record.
    /// Each file is placed without replacing an equal image of the same job and index that another
    /// worker (one whose lease ran out) put there: that file is kept and recorded (`place`). Throws
    /// `LeaseLost` once `lease` no longer holds, before any file is placed.
    func write(image: GeneratedImage, claim: ShardClaim, spec: JobSpec, models: JobModels, directory: String, threads: Int,
               lease: LeaseKeeper) throws {
        let job = claim.job
        guard image.width > 0, image.height > 0, image.channels == 1 || image.channels == 3,
              image.pixels.count == image.width * image.height * image.channels else {
            throw ImageCodecError.invalidArgument("image \(image.index) has an invalid geometry")
        }
        let env = generator.environment(for: spec)
        let cls = image.classIndex.flatMap { ci in spec.classes.first { $0.index == ci } }
            ?? image.classIndex.map { ClassRef(index: $0, name: "class \($0)") }
        let createdAt = ISO8601DateFormatter().string(from: Date())
        let record = GenerationRecord(
            job: .init(id: job.id, name: spec.name, fileSHA256: job.contentSHA256), index: image.index, seed: image.seed,
            seedDerivation: image.recordFields["seed_derivation"] ?? JobSpec.seedDerivation, classRef: cls,
            model: models.unet, classifier: models.classifier, spec: spec,
            software: .init(name: "diffusiond", version: DaemonVersion.string, host: host, kernel: env.kernel,
                            kernelVersions: env.kernelVersions, precision: env.precision, threads: threads, cpu: env.cpu),
            fields: image.recordFields, createdAt: createdAt)
        let json = record.jsonString()
        let format = spec.output.format
        let bytes = try ImageFile.encode(image.raster, format: format, quality: spec.output.quality ?? 95,
                                         record: EmbeddedRecord(json: json, parameters: record.parametersText))
        let path = directory + "/" + Self.fileName(spec: spec, index: image.index)
        let placed = try place(bytes, at: path, claim: claim, index: image.index, lease: lease)
        // The viewing copy is part of the image: written before the row, so that a
        // crash or a full disk never leaves a recorded image without it.
        if spec.output.upscale > 1 {
            let view = Upscale.nearest(image.raster, factor: spec.output.upscale)
            let viewDir = directory + "/view"
            try FileManager.default.createDirectory(atPath: viewDir, withIntermediateDirectories: true)
            let viewBytes = try ImageFile.encode(view, format: format, quality: spec.output.quality ?? 95,
                                                 record: EmbeddedRecord(json: json, parameters: record.parametersText))
            _ = try place(viewBytes, at: viewDir + "/" + Self.fileName(spec: spec, index: image.index), claim: claim,
                          index: image.index, lease: lease)
        }
        let recordJSON = placed == bytes ? json : ((try? ImageFile.decode(placed))?.record.json ?? json)
        // The row is written only once the files are in place (and their directories synced).
        try store.recordImage(ImageRow(jobID: job.id, index: image.index, seed: image.seed, classIndex: cls?.index,
                                       className: cls?.name, path: path, format: format.rawValue, width: image.width,
                                       height: image.height, byteSize: placed.count, sha256: SHA256Hex.of(placed),
                                       record: recordJSON), under: claim)
    }

    /// Puts `bytes` at `path` and returns the bytes that are there then: `bytes`, or those of a file
    /// already in place that is the same image of the same job and index (the pixels and the
    /// record's job and index agree), which is kept. Any other file there (a torn write of no
    /// worker, a stray) is replaced, while the lease holds. Nothing is placed once it does not.
    func place(_ bytes: [UInt8], at path: String, claim: ShardClaim, index: Int, lease: LeaseKeeper) throws -> [UInt8] {
        let placement = try AtomicFile.placeExclusively(bytes, at: path) {
            guard lease.isHeld else { throw LeaseLost(claim) }
        }
        guard case let .exists(temporary) = placement else { return bytes }
        if let existing = try? FileBytes.read(path: path), Self.isSameImage(existing, as: bytes, job: claim.job, index: index) {
            AtomicFile.discard(temporary: temporary)
            return existing
        }
        guard lease.isHeld else {
            AtomicFile.discard(temporary: temporary)
            throw LeaseLost(claim)
        }
        try AtomicFile.replace(path, with: temporary)
        return bytes
    }

    /// True when `existing` decodes to the pixels of `ours` and its record names the same job and index.
    static func isSameImage(_ existing: [UInt8], as ours: [UInt8], job: JobRow, index: Int) -> Bool {
        guard let theirs = try? ImageFile.decode(existing), let mine = try? ImageFile.decode(ours),
              theirs.image == mine.image, let json = theirs.record.json,
              let record = try? GenerationRecord.parse(json) else { return false }
        return record.job.id == job.id && record.job.fileSHA256 == job.contentSHA256 && record.index == index
    }

    /// The image index a file name of this job stands for (`<name>-00017.png` -> 17), or nil.
    static func index(ofFileName name: String, spec: JobSpec) -> Int? {
        let prefix = spec.name + "-", suffix = "." + spec.output.format.fileExtension
        guard name.hasPrefix(prefix), name.hasSuffix(suffix), name.count > prefix.count + suffix.count else { return nil }
        let digits = name.dropFirst(prefix.count).dropLast(suffix.count)
        guard digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber) else { return nil }
        return Int(digits)
    }

    /// Makes the claim's part of the output folder agree with its rows (at the start of a claim, and
    /// after its batches): the temporaries of its images are removed (also in view/); rows of its
    /// range whose file is missing (or has another size), or whose viewing copy is missing, are
    /// deleted, and those images are generated again, identically. Files of its range without a
    /// row (placed just before a crash) stay: writing that image again keeps or replaces them
    /// (`place`). Nothing outside the claim's range is touched: other workers write there.
    func reconcile(claim: ShardClaim, spec: JobSpec, directory: String) throws -> (removedFiles: [String], removedRows: [Int]) {
        let viewDir = directory + "/view"
        let mine: (String) -> Bool = { name in Self.index(ofFileName: name, spec: spec).map(claim.indices.contains) ?? false }
        let removed = AtomicFile.removeTemporaries(in: directory, where: mine)
            + AtomicFile.removeTemporaries(in: viewDir, where: mine).map { "view/" + $0 }
        let rows = try store.images(jobID: claim.job.id).filter { claim.indices.contains($0.index) }
        var staleRows: [Int] = []
        for row in rows {
            var st = stat()
            let name = (row.path as NSString).lastPathComponent
            if stat(row.path, &st) != 0 || Int(st.st_size) != row.byteSize
                || (spec.output.upscale > 1 && stat(viewDir + "/" + name, &st) != 0) {
                staleRows.append(row.index)
            }
        }
        try store.deleteImages(indices: staleRows, under: claim)
        if !removed.isEmpty || !staleRows.isEmpty {
            logger.notice("reconciled job outputs", metadata: ["job": "\(claim.job.id)", "shard": "\(claim.shard)",
                                                              "temporaries_removed": "\(removed.count)",
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
