import ArgumentParser
import DiffusionControl
import DiffusionDaemon
import DiffusionEngine
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check an image's embedded record and SHA-256 against the database.")
        @OptionGroup var common: Common
        @Flag(help: "Also resample the image from its record and compare the pixels bit for bit.") var regenerate = false
        @Argument(help: "The image file.") var image: String

        struct Combined: Encodable {
            var verify: VerifyReport
            var regeneration: RegenerationReport?
        }

        func run() throws {
            if regenerate { KernelSelection.relaunchWithBestKernelsIfNeeded() }  // the daemon's kernels, so the bits can match
            let report = VerifyReport.build(path: image, store: try? common.openStore())
            var regeneration: RegenerationReport?
            if regenerate {
                let cfg = try common.loadConfig()
                regeneration = try RegenerationReport.build(path: image, modelsDirectory: cfg.models, threads: cfg.threads)
            }
            if let regeneration {
                try common.emit(Combined(verify: report, regeneration: regeneration)) {
                    report.render() + "\n" + regeneration.render()
                }
            } else {
                try common.emit(report) { report.render() }
            }
            if !report.ok || regeneration?.identical == false { throw ExitCode(1) }
        }
    }
}
