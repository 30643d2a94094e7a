import ArgumentParser
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check a job file (or, with --config-file, a config) without submitting.")
        @OptionGroup var common: Common
        @Flag(help: "Validate FILE as a daemon config instead of a job.") var configFile = false
        @Argument(help: "The file to check.") var file: String
        func run() throws {
            if configFile {
                do { _ = try DaemonConfig.load(path: file) } catch {
                    FileHandle.standardError.write(Data("\(file): invalid\n\(error)\n".utf8))
                    throw ExitCode(65)
                }
                try common.emit(["file": file, "valid": "true"]) { "\(file): ok" }
                return
            }
            let cfg = try common.loadConfig()
            let bytes = try FileBytes.read(path: file, limit: cfg.limits.jobFileBytes + 1)
            let validator = JobValidator(config: cfg, catalog: DirectoryModelCatalog(root: cfg.models))
            do {
                let spec = try validator.validate(bytes, fileName: file)
                if common.json { print(spec.jsonString(pretty: true)) } else {
                    print("\(file): ok (\(spec.totalImages) images, \(spec.sampler.kind.jobName), model \(spec.model))")
                    print(spec.jsonString(pretty: true))
                }
            } catch {
                if common.json {
                    try common.emit(error.errors) { "" }
                } else {
                    FileHandle.standardError.write(Data("\(file): invalid\n\(error.description)\n".utf8))
                }
                throw ExitCode(65)
            }
        }
    }
}
