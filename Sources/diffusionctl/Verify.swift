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
                let started = Date()
                let reporter = StepReporter(started: started)
                regeneration = try RegenerationReport.build(path: image, modelsDirectory: cfg.models, threads: cfg.threads,
                                                            progress: { reporter.report($0) })
                reporter.finish()
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

/// Regeneration progress on standard error: a line rewritten in place on a terminal, else a line
/// about every 5 s (and the last step).
final class StepReporter: Sendable {
    let started: Date
    let terminal = isatty(2) != 0
    private let lastLine = Locked(Date.distantPast)

    init(started: Date) { self.started = started }

    func report(_ p: BatchProgress) {
        let now = Date()
        let last = p.completedSteps == p.totalSteps
        guard terminal || last || now.timeIntervalSince(lastLine.current) >= 5 else { return }
        lastLine.set(now)
        let elapsed = now.timeIntervalSince(started)
        let eta = p.completedSteps > 0 ? elapsed / Double(p.completedSteps) * Double(p.totalSteps - p.completedSteps) : 0
        let text = "regenerating: step \(p.completedSteps)/\(p.totalSteps), \(ProgressText.duration(elapsed)) elapsed, ETA \(ProgressText.duration(eta))"
        FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K" + text : text + "\n").utf8))
    }

    func finish() { if terminal { FileHandle.standardError.write(Data("\n".utf8)) } }
}
