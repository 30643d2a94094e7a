import ArgumentParser
import DiffusionControl
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Daemon liveness, the active job, the queue, recent jobs, cached models.")
        @OptionGroup var common: Common
        func run() throws {
            let report = try StatusReport.build(store: try common.openStore())
            try common.emit(report) { report.render() }
        }
    }
}
