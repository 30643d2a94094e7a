import Foundation
import PostgresNIO
import Provenance

/// Reads a row's columns by name, as the type the caller wants.
struct PostgresColumns {
    let row: PostgresRandomAccessRow

    init(_ row: PostgresRow) { self.row = row.makeRandomAccess() }

    func callAsFunction<T: PostgresDecodable>(_ name: String) throws -> T { try row[name].decode(T.self) }

    /// A column a later migration added: nil on a database that lacks it.
    func added<T: PostgresDecodable & ExpressibleByNilLiteral>(_ name: String) throws -> T {
        row.contains(name) ? try row[name].decode(T.self) : nil
    }
}

// The rows from the columns of their tables (PostgresSchema.swift), as `Records.swift` reads them from SQLite.

extension JobRow {
    /// The columns `init(postgres:)` reads.
    static let postgresColumns = """
        id, name, spool_name, source_name, content_sha256, spec, state, priority, attempts,
        cancel_requested, error, total_images, output_dir, environment_id, created_at, updated_at,
        started_at, finished_at
        """

    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(id: try c("id"), name: try c("name"), spoolName: try c("spool_name"), sourceName: try c("source_name"),
                  contentSHA256: try c("content_sha256"), spec: try c("spec"),
                  state: JobState(rawValue: try c("state")) ?? .failed, priority: try c("priority"),
                  attempts: try c("attempts"), cancelRequested: (try c("cancel_requested") as Int) != 0,
                  error: try c("error"), totalImages: try c("total_images"), outputDir: try c("output_dir"),
                  environmentID: try c("environment_id"), createdAt: try c("created_at"), updatedAt: try c("updated_at"),
                  startedAt: try c("started_at"), finishedAt: try c("finished_at"))
    }
}

extension TransitionRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(jobID: try c("job_id"), fromState: (try c("from_state") as String?).flatMap(JobState.init(rawValue:)),
                  toState: JobState(rawValue: try c("to_state")) ?? .failed, at: try c("at"), reason: try c("reason"))
    }
}

extension ImageRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(jobID: try c("job_id"), index: try c("idx"), seed: UInt64(bitPattern: try c("seed") as Int64),
                  classIndex: try c("class_index"), className: try c("class_name"), path: try c("path"),
                  format: try c("format"), width: try c("width"), height: try c("height"), byteSize: try c("byte_size"),
                  sha256: try c("sha256"), record: try c("record"), committedAt: try c("committed_at"),
                  worker: try c.added("worker"), leaseToken: try c.added("lease_token"))
    }
}

extension ModelLoadRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(name: try c("name"), contentHash: try c("content_hash"), loadedAt: try c("loaded_at"),
                  loadSeconds: try c("load_seconds"), bytes: try c("bytes"))
    }
}

extension MetricRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(jobID: try c("job_id"), name: try c("name"), value: try c("value"), n: try c("n"),
                  details: try c("details"), recordedAt: try c("recorded_at"))
    }
}

extension EnvironmentRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(id: try c("id"), recordedAt: try c("recorded_at"), version: try c("version"), host: try c("host"),
                  kernel: try c("kernel"), kernelVersions: decodeJSON([String: String].self, try c("kernel_versions")) ?? [:],
                  threads: try c("threads"), details: decodeJSON([String: String].self, try c("details")) ?? [:])
    }
}

extension HeartbeatRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(pid: try c("pid"), startedAt: try c("started_at"), updatedAt: try c("updated_at"), status: try c("status"),
                  activeJobID: try c("active_job_id"), imagesDone: try c("images_done"), imagesTotal: try c("images_total"),
                  imagesPerSecond: try c("images_per_second"),
                  cachedModels: decodeJSON([String].self, try c("cached_models")) ?? [],
                  batchImages: try c("batch_images"), stepsDone: try c("steps_done"), stepsTotal: try c("steps_total"),
                  etaSeconds: try c("eta_seconds"))
    }
}

extension JobModelRow {
    init(postgres row: PostgresRow) throws {
        let c = PostgresColumns(row)
        self.init(jobID: try c("job_id"), role: Role(rawValue: try c("role")) ?? .unet, name: try c("name"), sha256: try c("sha256"))
    }
}

/// JSON text as SQLite's store writes it: sorted keys.
func encodeJSON<T: Encodable>(_ value: T) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return (try? String(decoding: encoder.encode(value), as: UTF8.self)) ?? "null"
}

func decodeJSON<T: Decodable>(_ type: T.Type, _ text: String) -> T? {
    try? JSONDecoder().decode(T.self, from: Data(text.utf8))
}
