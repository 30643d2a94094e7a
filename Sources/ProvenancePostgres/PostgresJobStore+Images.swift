import PostgresNIO
import Provenance

/// The PostgreSQL store: image rows, with the semantics of `ProvenanceStore+Images.swift`.
extension PostgresJobStore {
    /// Records an image whose file is already in place; an index is recorded once per job.
    public func recordImage(_ image: ImageRow) throws {
        try transaction { c in
            try execute("""
                INSERT INTO images (job_id, idx, seed, class_index, class_name, path, format, width, height,
                                    byte_size, sha256, record, committed_at)
                VALUES (\(image.jobID), \(image.index), \(Int64(bitPattern: image.seed)), \(image.classIndex),
                        \(image.className), \(image.path), \(image.format), \(image.width), \(image.height),
                        \(image.byteSize), \(image.sha256), \(image.record), \(image.committedAt))
                """, on: c)
        }
    }

    /// A job's image rows by index.
    public func images(jobID: Int64) throws -> [ImageRow] {
        try read { c in
            try rows("SELECT * FROM images WHERE job_id = \(jobID) ORDER BY idx", on: c).map(ImageRow.init(postgres:))
        }
    }

    /// One image row of a job, if recorded.
    public func image(jobID: Int64, index: Int) throws -> ImageRow? {
        try read { c in
            try rows("SELECT * FROM images WHERE job_id = \(jobID) AND idx = \(index)", on: c).first.map(ImageRow.init(postgres:))
        }
    }

    /// The indices of a job's recorded images.
    public func recordedIndices(jobID: Int64) throws -> Set<Int> {
        try read { c in
            Set(try rows("SELECT idx FROM images WHERE job_id = \(jobID)", on: c).map { try $0.makeRandomAccess()[0].decode(Int.self) })
        }
    }

    /// How many images of a job are recorded.
    public func imageCount(jobID: Int64) throws -> Int {
        try read { c in try scalar("SELECT COUNT(*) FROM images WHERE job_id = \(jobID)", as: Int.self, on: c) ?? 0 }
    }

    /// Indices in 0 ..< total without a row, ascending.
    public func unrecordedIndices(jobID: Int64, total: Int) throws -> [Int] {
        let done = try recordedIndices(jobID: jobID)
        return (0 ..< total).filter { !done.contains($0) }
    }

    /// Deletes image rows (whose files were found missing at reconciliation), in one transaction.
    public func deleteImages(jobID: Int64, indices: [Int]) throws {
        guard !indices.isEmpty else { return }
        try transaction { c in
            try execute("DELETE FROM images WHERE job_id = \(jobID) AND idx = ANY(\(indices))", on: c)
        }
    }
}
