import Foundation
import Logging
import Provenance

/// Turns files in spool/incoming into job rows: claim by rename into active/,
/// read, validate, record (pending, or failed with the file moved to failed/
/// beside an .error file naming the field and the problem).
public final class SpoolIngestor: Sendable {
    public let spool: Spool
    let store: any JobStore
    let validator: Locked<JobValidator>
    let logger: Logger

    public init(spool: Spool, store: any JobStore, validator: JobValidator, logger: Logger) {
        self.spool = spool
        self.store = store
        self.validator = Locked(validator)
        self.logger = logger
    }

    /// Replaces the validator (after a config reload).
    public func update(validator: JobValidator) { self.validator.set(validator) }

    /// Ingests every candidate in incoming/ that `readiness` calls complete (the others wait
    /// for their writer); returns the ids of new pending jobs and how many files wait. A file
    /// that only waits out its settle time holds back the files that arrived after it, so the
    /// queue keeps arrival order; one still being written does not hold back the others.
    @discardableResult
    public func ingestIncoming(readiness: IncomingReadiness) -> (jobs: [Int64], waiting: Int) {
        var pending: [Int64] = []
        var waiting = 0
        var heldBack = false
        for name in spool.candidates(arrival: readiness.arrivalIndex) {
            let path = spool.incoming + "/" + name
            guard let kind = Spool.entryKind(path) else { continue }
            if kind != "regular file" {
                logger.warning("rejecting non-regular spool entry", metadata: ["name": "\(name)", "kind": "\(kind)"])
                rejectEntry(path: path, name: name, error: "not a regular file (\(kind)); only regular job files are accepted")
                continue
            }
            guard readiness.isComplete(name: name, path: path) else {
                if !readiness.isBeingWritten(name) { heldBack = true }
                waiting += 1
                continue
            }
            if heldBack {
                waiting += 1
                continue
            }
            let ext = (name as NSString).pathExtension.lowercased()
            if !Spool.jobExtensions.contains(ext) {
                rejectEntry(path: path, name: name, error: "unsupported file name: job files end in .yml, .yaml or .json")
                continue
            }
            do {
                guard let spoolName = try spool.claim(name) else { continue }
                if let id = ingestClaimed(spoolName: spoolName) { pending.append(id) }
            } catch {
                logger.error("cannot claim job file", metadata: ["name": "\(name)", "error": "\(error)"])
            }
        }
        return (pending, waiting)
    }

    /// Records a file already in active/ (claimed). Returns the job id when pending.
    @discardableResult
    public func ingestClaimed(spoolName: String) -> Int64? {
        let original = Spool.originalName(ofSpoolName: spoolName)
        let v = validator.current
        let bytes: [UInt8]
        do {
            bytes = try spool.readActive(spoolName, limit: v.limits.jobFileBytes)
        } catch {
            let message = "\(error)"
            recordRejected(spoolName: spoolName, original: original, content: [], errors: ValidationFailure([FieldError("", message)]))
            return nil
        }
        do {
            let spec = try v.validate(bytes, fileName: original)
            let row = try store.insertJob(NewJob(name: spec.name, spoolName: spoolName, sourceName: original, content: bytes,
                                                 spec: spec.jsonString(), state: .pending, priority: spec.priority,
                                                 totalImages: spec.totalImages))
            logger.info("job queued", metadata: ["job": "\(row.id)", "name": "\(spec.name)", "images": "\(spec.totalImages)",
                                                 "file": "\(original)"])
            return row.id
        } catch let failure as ValidationFailure {
            recordRejected(spoolName: spoolName, original: original, content: bytes, errors: failure)
            return nil
        } catch {
            logger.error("cannot record job", metadata: ["file": "\(original)", "error": "\(error)"])
            return nil
        }
    }

    /// An entry of incoming/ that is no job file (a symlink, a directory, another extension):
    /// moved to failed/ unopened, and recorded as a failed job so that `status` and `jobs` show it.
    func rejectEntry(path: String, name: String, error: String) {
        let moved = try? spool.reject(path: path, name: name, error: error)
        let stem = SafeName.sanitize((name as NSString).deletingPathExtension)
        _ = try? store.insertJob(NewJob(name: stem, spoolName: Spool.makeSpoolName(for: name), sourceName: name, content: [],
                                        spec: nil, state: .failed, error: error + (moved.map { " (moved to failed/\($0))" } ?? "")))
    }

    func recordRejected(spoolName: String, original: String, content: [UInt8], errors: ValidationFailure) {
        logger.warning("job file rejected", metadata: ["file": "\(original)", "errors": "\(errors.description)"])
        let name = SafeName.sanitize((original as NSString).deletingPathExtension)
        _ = try? store.insertJob(NewJob(name: name, spoolName: spoolName, sourceName: original, content: content,
                                        spec: nil, state: .failed, error: errors.description))
        _ = try? spool.fail(spoolName: spoolName, error: errors.description.replacingOccurrences(of: "\n", with: "\n\(original): "))
    }

    /// Files in active/ whose job has ended (with a shared store, the worker that ends a job may run
    /// on another host than the spool its file was dropped in): moved to done/ or failed/. A file
    /// claimed while the store could not record it (a database restarting) is recorded now. Runs on
    /// the spool watcher's task, between ingestions, so no file is half-way through one.
    public func settleFinished() {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: spool.active)) ?? []).filter { !Spool.isIgnored($0) }
        for name in names.sorted() {
            let found: JobRow?
            do { found = try store.job(spoolName: name) } catch { return }
            guard let row = found else {
                logger.notice("recording a job file claimed while the store could not record it", metadata: ["file": "\(name)"])
                ingestClaimed(spoolName: name)
                continue
            }
            switch row.state {
            case .done: _ = try? spool.finish(spoolName: name)
            case .failed, .canceled: _ = try? spool.fail(spoolName: name, error: row.error ?? row.state.rawValue)
            case .pending, .active: break
            }
        }
    }

    /// At start: files in active/ without a job row were claimed just before a
    /// crash: record them now. Rows in a final state whose file is still in
    /// active/ crashed before the move: move them now.
    public func reconcileActive() {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: spool.active)) ?? []).filter { !Spool.isIgnored($0) }
        for name in names.sorted() {
            let row = try? store.job(spoolName: name)
            switch row?.state {
            case nil:
                logger.notice("recording job claimed before a crash", metadata: ["file": "\(name)"])
                ingestClaimed(spoolName: name)
            case .done?:
                _ = try? spool.finish(spoolName: name)
            case .failed?, .canceled?:
                _ = try? spool.fail(spoolName: name, error: row?.error ?? row!.state.rawValue)
            case .pending?, .active?:
                break
            }
        }
    }
}
