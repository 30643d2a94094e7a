import GRDB

/// A bundle a job used, by role, with the SHA-256 of its content (table `job_models`).
public struct JobModelRow: Codable, Sendable, Equatable {
    /// What the bundle did in the job.
    public enum Role: String, Codable, Sendable, CaseIterable {
        /// The diffusion network that sampled the images.
        case unet
        /// The noisy classifier whose gradient guided them.
        case classifier
        /// The features network behind the job's metrics.
        case features
    }

    public var jobID: Int64
    public var role: Role
    public var name: String
    public var sha256: String

    public init(jobID: Int64, role: Role, name: String, sha256: String) {
        self.jobID = jobID
        self.role = role
        self.name = name
        self.sha256 = sha256
    }
}

extension JobModelRow: FetchableRecord {
    /// A row of `job_models`.
    public init(row: Row) {
        self.init(jobID: row["job_id"], role: Role(rawValue: row["role"]) ?? .unet, name: row["name"], sha256: row["sha256"])
    }
}
