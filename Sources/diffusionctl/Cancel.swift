import ArgumentParser
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Cancel: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a job: a pending one at once, a running one at its next batch boundary.")
        @OptionGroup var common: Common
        @Argument(help: "The job id.") var job: Int64
        func run() throws {
            let outcome = try common.openStore().requestCancel(jobID: job)
            try common.emit(["job": String(job), "outcome": outcome.rawValue]) {
                switch outcome {
                case .canceled: return "job \(job) canceled"
                case .requested: return "job \(job): cancel requested; it stops at the next batch boundary"
                case .alreadyFinished: return "job \(job) has already finished"
                }
            }
        }
    }
}
