import Foundation
import GRDB

/// The SQLite store: image rows.
extension ProvenanceStore {
    // MARK: - Images

    /// Records an image whose file has already been renamed into place (and its
    /// directory fsynced). A crash between the rename and this call leaves a
    /// file without a row; `imagesToReconcile` finds those at the next start.
    public func recordImage(_ image: ImageRow) throws {
        try writer.write { db in
            try db.execute(sql: """
                INSERT INTO images (job_id, idx, seed, class_index, class_name, path, format, width, height,
                                    byte_size, sha256, record, committed_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [image.jobID, image.index, Int64(bitPattern: image.seed), image.classIndex,
                                 image.className, image.path, image.format, image.width, image.height,
                                 image.byteSize, image.sha256, image.record, image.committedAt])
        }
    }

    public func images(jobID: Int64) throws -> [ImageRow] {
        try writer.read { db in
            try ImageRow.fetchAll(db, sql: "SELECT * FROM images WHERE job_id = ? ORDER BY idx", arguments: [jobID])
        }
    }

    public func image(jobID: Int64, index: Int) throws -> ImageRow? {
        try writer.read { db in
            try ImageRow.fetchOne(db, sql: "SELECT * FROM images WHERE job_id = ? AND idx = ?", arguments: [jobID, index])
        }
    }

    public func recordedIndices(jobID: Int64) throws -> Set<Int> {
        try writer.read { db in
            Set(try Int.fetchAll(db, sql: "SELECT idx FROM images WHERE job_id = ?", arguments: [jobID]))
        }
    }

    public func imageCount(jobID: Int64) throws -> Int {
        try writer.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images WHERE job_id = ?", arguments: [jobID]) ?? 0
        }
    }

    /// Indices in 0 ..< total without a row, ascending.
    public func unrecordedIndices(jobID: Int64, total: Int) throws -> [Int] {
        let done = try recordedIndices(jobID: jobID)
        return (0 ..< total).filter { !done.contains($0) }
    }

    /// Deletes image rows (whose files were found missing at reconciliation).
    public func deleteImages(jobID: Int64, indices: [Int]) throws {
        guard !indices.isEmpty else { return }
        try writer.write { db in
            for i in indices {
                try db.execute(sql: "DELETE FROM images WHERE job_id = ? AND idx = ?", arguments: [jobID, i])
            }
        }
    }
}
