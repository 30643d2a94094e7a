import ArgumentParser
import DiffusionControl
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Daemon liveness, the active job, the queue, recent jobs, cached models.",
            discussion: "Liveness is the state directory's lock, which a running diffusiond holds. Exits 3 when no daemon runs (as `systemctl status` does), after printing the report.")
        @OptionGroup var common: Common
        func run() throws {
            let report = try StatusReport.build(store: try common.openStore(), lockDirectory: try common.effectiveConfig().state)
            try common.emit(report) { report.render() }
            if !report.daemon.alive { throw ExitCode(3) }
        }
    }
}
