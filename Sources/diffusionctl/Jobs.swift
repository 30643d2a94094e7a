import ArgumentParser
import DiffusionControl
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Jobs: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List jobs, newest first.")
        @OptionGroup var common: Common
        @Option(name: .customLong("only"), help: "Only jobs in this state (pending, active, done, failed, canceled).")
        var only: JobState?
        @Option(help: "At most this many jobs.")
        var limit = 50
        func run() throws {
            let store = try common.openStore()
            let rows = try store.jobs(states: only.map { [$0] }, limit: limit).map { StatusReport.summary($0, store: store) }
            try common.emit(rows) {
                rows.isEmpty ? "no jobs" : rows.map { "\($0.id)\t\($0.state)\t\($0.imagesDone)/\($0.images)\t\($0.name)" + ($0.error.map { "\t\($0.split(separator: "\n").first ?? "")" } ?? "") }.joined(separator: "\n")
            }
        }
    }
}

/// `--only pending` and friends: a state by its name.
extension JobState: ExpressibleByArgument {}
