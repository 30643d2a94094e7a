import GRDB

// The rows decode as GRDB records, from the columns of their tables (Schema.swift). Jobs and
// images decode in Rows.swift (`init(row:)`); the smaller tables here.

extension JobRow: FetchableRecord {}

extension ImageRow: FetchableRecord {}

extension TransitionRow: FetchableRecord {
    /// A row of `job_transitions`.
    public init(row: Row) {
        self.init(jobID: row["job_id"], from: (row["from_state"] as String?).flatMap(JobState.init(rawValue:)),
                  to: JobState(rawValue: row["to_state"]) ?? .failed, at: row["at"], reason: row["reason"])
    }
}

extension ModelLoadRow: FetchableRecord {
    /// A row of `models`.
    public init(row: Row) {
        self.init(name: row["name"], contentHash: row["content_hash"], loadedAt: row["loaded_at"],
                  loadSeconds: row["load_seconds"], bytes: row["bytes"])
    }
}

extension MetricRow: FetchableRecord {
    /// A row of `metrics`.
    public init(row: Row) {
        self.init(jobID: row["job_id"], name: row["name"], value: row["value"], n: row["n"],
                  details: row["details"], recordedAt: row["recorded_at"])
    }
}

extension EnvironmentRow: FetchableRecord {
    /// A row of `environment`.
    public init(row: Row) {
        self.init(id: row["id"], recordedAt: row["recorded_at"], version: row["version"], host: row["host"],
                  kernel: row["kernel"], kernelVersions: jsonValue([String: String].self, row["kernel_versions"]) ?? [:],
                  threads: row["threads"], details: jsonValue([String: String].self, row["details"]) ?? [:])
    }
}

extension HeartbeatRow: FetchableRecord {
    /// The one row of `heartbeat`.
    public init(row: Row) {
        self.init(pid: row["pid"], startedAt: row["started_at"], updatedAt: row["updated_at"],
                  status: row["status"], activeJobID: row["active_job_id"], imagesDone: row["images_done"],
                  imagesTotal: row["images_total"], imagesPerSecond: row["images_per_second"],
                  cachedModels: jsonValue([String].self, row["cached_models"]) ?? [],
                  batchImages: row["batch_images"], stepsDone: row["steps_done"], stepsTotal: row["steps_total"],
                  etaSeconds: row["eta_seconds"])
    }
}
