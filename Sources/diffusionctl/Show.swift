import ArgumentParser
import DiffusionControl
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The full provenance record of a job.")
        @OptionGroup var common: Common
        @Argument(help: "The job id.") var job: Int64
        func run() throws {
            let report = try JobReport.build(store: try common.openStore(), jobID: job)
            try common.emit(report) { report.render() }
        }
    }
}
