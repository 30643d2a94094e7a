import Foundation
import GRDB

/// The SQLite store: the daemon's heartbeat row.
extension ProvenanceStore {
    // MARK: - Heartbeat

    public func writeHeartbeat(_ hb: HeartbeatRow) throws {
        try writer.write { db in
            try db.execute(sql: """
                INSERT INTO heartbeat (id, pid, started_at, updated_at, status, active_job_id, images_done, images_total,
                                       images_per_second, cached_models, batch_images, steps_done, steps_total, eta_seconds)
                VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at,
                    updated_at = excluded.updated_at, status = excluded.status, active_job_id = excluded.active_job_id,
                    images_done = excluded.images_done, images_total = excluded.images_total,
                    images_per_second = excluded.images_per_second, cached_models = excluded.cached_models,
                    batch_images = excluded.batch_images, steps_done = excluded.steps_done,
                    steps_total = excluded.steps_total, eta_seconds = excluded.eta_seconds
                """, arguments: [hb.pid, hb.startedAt, hb.updatedAt, hb.status, hb.activeJobID, hb.imagesDone,
                                 hb.imagesTotal, hb.imagesPerSecond, jsonText(hb.cachedModels), hb.batchImages,
                                 hb.stepsDone, hb.stepsTotal, hb.etaSeconds])
        }
    }

    public func heartbeat() throws -> HeartbeatRow? {
        try writer.read { db in
            try HeartbeatRow.fetchOne(db, sql: "SELECT * FROM heartbeat WHERE id = 1")
        }
    }
}
