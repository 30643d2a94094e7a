import ArgumentParser
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Submit: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a job file and put it in the spool atomically, or straight into a shared store.",
            discussion: """
                With --store postgresql://USER@HOST:PORT/DB the job row goes into that store directly, validated as \
                a spooled job is (the config's models and limits), from any machine that reaches the database; \
                any worker on the store runs it. The password comes from --store-password-file, the config's \
                store_password_file, or $DIFFUSIOND_STORE_PASSWORD.
                """)
        @OptionGroup var common: Common
        @Argument(help: "The job file (YAML or JSON).") var file: String
        @Option(help: "Insert the job into this PostgreSQL store instead of the spool.") var store: String?
        @Option(help: "The file whose first line is the store's password (with --store).") var storePasswordFile: String?

        func run() throws {
            var cfg = try common.loadConfig()
            let bytes = try FileBytes.read(path: file, limit: cfg.limits.jobFileBytes + 1)
            let validator = JobValidator(config: cfg, catalog: DirectoryModelCatalog(root: cfg.models))
            let spec: JobSpec
            do {
                spec = try validator.validate(bytes, fileName: file)
            } catch {
                FileHandle.standardError.write(Data("\(file): rejected\n\(error.description)\n".utf8))
                throw ExitCode(65)
            }
            let name = (file as NSString).lastPathComponent
            if let store {
                do { cfg.store = try StoreLocation.parse(store) } catch { throw ValidationError("--store: \(error.description)") }
                guard cfg.store != .sqlite else { throw ValidationError("--store takes a postgresql:// URL (a shared store)") }
                if let storePasswordFile { cfg.storePasswordFile = storePasswordFile }
                let row = try StoreOpener.open(cfg, as: .client).insertJob(NewJob(
                    name: spec.name, spoolName: Spool.makeSpoolName(for: name), sourceName: name, content: bytes,
                    spec: spec.jsonString(), state: .pending, priority: spec.priority, totalImages: spec.totalImages))
                try common.emit(["job": "\(row.id)", "store": cfg.store.description]) {
                    "submitted \(file) as job \(row.id) to \(cfg.store.description)"
                }
                return
            }
            guard storePasswordFile == nil else { throw ValidationError("--store-password-file goes with --store") }
            guard Spool.entryKind(cfg.spoolIncoming) == "directory" else {
                throw ValidationError("\(cfg.spoolIncoming) does not exist: diffusiond creates the spool when it first starts (systemctl start diffusiond), or the config names another spool")
            }
            let queued = try Spool(root: cfg.spool).submit(bytes, name: name)
            try common.emit(["submitted": queued, "spool": cfg.spoolIncoming]) { "submitted \(file) as \(cfg.spoolIncoming)/\(queued)" }
            common.warnWhenNoDaemon(state: try common.effectiveConfig().state, what: "the job waits in \(cfg.spoolIncoming)")
        }
    }
}
