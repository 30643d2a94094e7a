import Foundation
import Testing

/// `diffusionctl validate` (the real binary) shows no seed of its own for a file without one:
/// the daemon draws the job's seed when it accepts it.
@Suite struct ValidateCommandTests {
    @Test func aDrawnSeedIsNotShownAsTheJobsSeed() throws {
        let h = try DaemonHarness(delayMs: 0)
        let config = h.root + "/config.yml"
        try "name: free\nclasses: [Trouser]\nimages: 1\n".write(toFile: h.root + "/free.yml", atomically: true, encoding: .utf8)
        try "name: fixed\nclasses: [Trouser]\nimages: 1\nseed: 31\n".write(toFile: h.root + "/fixed.yml", atomically: true, encoding: .utf8)
        let free = try diffusionctl(["validate", h.root + "/free.yml", "--config", config])
        #expect(free.status == 0 && free.output.contains("seed: none in the file; the daemon draws one"), "\(free)")
        #expect(free.output.contains("\"seed\" : null"), "\(free.output)")
        let freeJSON = try diffusionctl(["validate", h.root + "/free.yml", "--config", config, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(freeJSON.output.utf8)) as? [String: Any]
        #expect(object?["seed"] is NSNull && object?["seed_drawn"] as? Bool == true, "\(freeJSON.output)")
        let fixed = try diffusionctl(["validate", h.root + "/fixed.yml", "--config", config])
        #expect(fixed.status == 0 && fixed.output.contains("\"seed\" : 31") && !fixed.output.contains("seed: none"), "\(fixed)")
    }
}
