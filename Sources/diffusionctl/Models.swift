import ArgumentParser
import DiffusionControl
import DiffusionDaemon
import Foundation
import ImageCodecs
import Metrics
import Provenance

extension DiffusionCtl {
    struct Models: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Model bundles available, cached now, and their load history.")
        @OptionGroup var common: Common
        struct Report: Codable {
            var available: [ModelInfo]
            var cached: [String]
            var loads: [ModelLoadRow]
        }
        func run() throws {
            let cfg = try common.loadConfig()
            let available = DirectoryModelCatalog(root: cfg.models).allModels()
            var cached: [String] = [], loads: [ModelLoadRow] = []
            if let store = try? common.openStore() {
                let status = try StatusReport.build(store: store, lockDirectory: try common.effectiveConfig().state)
                cached = status.cachedModels
                loads = try store.modelLoads(limit: 20)
            }
            let report = Report(available: available, cached: cached, loads: loads)
            try common.emit(report) {
                var out = ["available (\(cfg.models)):"]
                out += available.map { "  \($0.name)  \($0.kind)  \($0.width)x\($0.height)x\($0.channels)  \($0.classes.count) classes" + (cached.contains($0.name) ? "  [cached]" : "") }
                if !loads.isEmpty {
                    out.append("recent loads:")
                    out += loads.map { "  \($0.name)  \($0.contentHash.prefix(16))  \(String(format: "%.2f", $0.loadSeconds)) s" }
                }
                return out.joined(separator: "\n")
            }
        }
    }
}
