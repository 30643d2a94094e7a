// Initializers from plain values, for stores that do not read GRDB rows (ProvenancePostgres).

extension JobRow {
    /// A job row from its column values.
    public init(id: Int64, name: String, spoolName: String, sourceName: String, contentSHA256: String, spec: String?,
                state: JobState, priority: Int, attempts: Int, cancelRequested: Bool, error: String?, totalImages: Int,
                outputDir: String?, environmentID: Int64?, createdAt: Double, updatedAt: Double, startedAt: Double?,
                finishedAt: Double?) {
        self.id = id
        self.name = name
        self.spoolName = spoolName
        self.sourceName = sourceName
        self.contentSHA256 = contentSHA256
        self.spec = spec
        self.state = state
        self.priority = priority
        self.attempts = attempts
        self.cancelRequested = cancelRequested
        self.error = error
        self.totalImages = totalImages
        self.outputDir = outputDir
        self.environmentID = environmentID
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }
}

extension TransitionRow {
    /// A transition row from its column values (the memberwise initializer is internal).
    public init(jobID: Int64, fromState: JobState?, toState: JobState, at: Double, reason: String?) {
        self.init(jobID: jobID, from: fromState, to: toState, at: at, reason: reason)
    }
}
