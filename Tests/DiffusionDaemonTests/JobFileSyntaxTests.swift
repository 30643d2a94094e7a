import DiffusionDaemon
import Foundation
import Testing

/// Job-file syntax errors that must say what is wrong in the user's terms.
@Suite struct JobFileSyntaxTests {
    @Test func aTabIsNamed() throws {
        let failure = try #require(errors("images: 4\nsampler:\n\tkind: ddpm\n"))
        let message = failure.description
        #expect(message.contains("tab"), "\(message)")
        #expect(message.contains("line 3"), "\(message)")
    }

    @Test func otherScannerErrorsDoNotMentionTabs() throws {
        let failure = try #require(errors("images: 4\nname: `x`\n"))
        #expect(failure.description.contains("not valid YAML"))
        #expect(!failure.description.contains("tab"), "\(failure.description)")
    }

    @Test func aJsonFileHoldingYAMLIsRejected() throws {
        let yaml = "images: 4\nsampler: {kind: ddpm, steps: 10}\nseed: 3\n"
        #expect(throws: Never.self) { _ = try validate(yaml, file: "job.yml") }
        let failure = try #require(errors(yaml, file: "job.json"))
        #expect(failure.description.contains("a .json job file must be JSON"), "\(failure.description)")
        #expect(failure.description.contains(".yml"))
        // The same settings as JSON are accepted under .json.
        let spec = try validate(#"{"images": 4, "sampler": {"kind": "ddpm", "steps": 10}, "seed": 3}"#, file: "job.json")
        #expect(spec.totalImages == 4 && spec.seed == 3)
    }
}
