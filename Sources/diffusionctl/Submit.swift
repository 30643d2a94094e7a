import ArgumentParser
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Submit: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a job file and put it in the spool atomically.")
        @OptionGroup var common: Common
        @Argument(help: "The job file (YAML or JSON).") var file: String
        func run() throws {
            let cfg = try common.loadConfig()
            let bytes = try FileBytes.read(path: file, limit: cfg.limits.jobFileBytes + 1)
            let validator = JobValidator(config: cfg, catalog: DirectoryModelCatalog(root: cfg.models))
            do {
                _ = try validator.validate(bytes, fileName: file)
            } catch {
                FileHandle.standardError.write(Data("\(file): rejected\n\(error.description)\n".utf8))
                throw ExitCode(65)
            }
            let name = (file as NSString).lastPathComponent
            guard Spool.entryKind(cfg.spoolIncoming) == "directory" else {
                throw ValidationError("\(cfg.spoolIncoming) does not exist: diffusiond creates the spool when it first starts (systemctl start diffusiond), or the config names another spool")
            }
            let queued = try Spool(root: cfg.spool).submit(bytes, name: name)
            try common.emit(["submitted": queued, "spool": cfg.spoolIncoming]) { "submitted \(file) as \(cfg.spoolIncoming)/\(queued)" }
            common.warnWhenNoDaemon(state: try common.effectiveConfig().state, what: "the job waits in \(cfg.spoolIncoming)")
        }
    }
}
