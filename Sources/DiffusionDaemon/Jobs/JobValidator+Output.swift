import DiffusionEngine
import Foundation
import ImageCodecs
import Yams

/// The seed, output and priority of a job file.
extension JobValidator {
    func seedSection(_ top: [String: Node], drawSeed: () -> UInt64, _ r: inout NodeReader) -> (seed: UInt64, drawn: Bool) {
        var seed: UInt64 = 0
        var drawn = false
        if let n = top["seed"], let v = r.uint64(n, path: "seed") {
            seed = v
        } else if top["seed"] == nil {
            seed = drawSeed()
            drawn = true
        }
        return (seed, drawn)
    }

    func outputSection(_ top: [String: Node], _ r: inout NodeReader) -> OutputSpec {
        var output = OutputSpec()
        if let n = top["output"] {
            if case .scalar = n, let s = r.choice(n, path: "output", ImageFormat.allCases.map(\.rawValue)) {
                output.format = ImageFormat(rawValue: s)!
            } else if case .scalar = n {
            } else if let m = r.mapping(n, path: "output", known: Self.outputKeys) {
                if let f = m["format"], let s = r.choice(f, path: "output.format", ImageFormat.allCases.map(\.rawValue)) { output.format = ImageFormat(rawValue: s)! }
                if let q = m["quality"] {
                    if output.format != .jpeg {
                        r.fail("output.quality", "applies only to jpeg output", q)
                    } else if let v = r.int(q, path: "output.quality", range: 1 ... 100) {
                        output.quality = v
                    }
                }
                if let u = m["upscale"], let v = r.int(u, path: "output.upscale", range: 1 ... 16) { output.upscale = v }
            }
        }
        if output.format == .jpeg, output.quality == nil { output.quality = 95 }
        return output
    }

    func prioritySection(_ top: [String: Node], _ r: inout NodeReader) -> Int {
        var priority = 0
        if let n = top["priority"], let v = r.int(n, path: "priority", range: -100 ... 100) { priority = v }
        return priority
    }
}
