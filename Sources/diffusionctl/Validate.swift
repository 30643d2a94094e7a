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
                let shown = Self.withoutDrawnSeed(spec)
                if common.json { print(shown) } else {
                    print("\(file): ok (\(spec.totalImages) images, \(spec.sampler.kind.jobName), model \(spec.model))")
                    if spec.seedDrawn {
                        print("seed: none in the file; the daemon draws one when it accepts the job (diffusionctl show JOB prints it)")
                    }
                    print(shown)
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

        /// The spec as JSON; a seed validate drew itself is shown as null (the daemon draws its own).
        static func withoutDrawnSeed(_ spec: JobSpec) -> String {
            let text = spec.jsonString(pretty: true)
            guard spec.seedDrawn, var object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                return text
            }
            object["seed"] = NSNull()
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data()
            return String(decoding: data, as: UTF8.self)
        }
    }
}
