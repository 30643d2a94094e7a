import DiffusionEngine
import Foundation
import Testing
@testable import DiffusionDaemon

/// `sampler.snr` and `sampler.corrector_steps` of pc jobs: validated, defaulted to score SDE's
/// values, refused elsewhere, and handed to the engine (the shipped model).
@Suite struct PredictorCorrectorJobTests {
    @Test func pcSettingsReachTheEngine() throws {
        let pc = try validate("classes: [Bag]\nimages: 1\nsampler: {kind: pc, steps: 3}\n")
        #expect(pc.sampler.snr == 0.16 && pc.sampler.correctorSteps == 1)
        let tuned = try validate("classes: [Bag]\nimages: 1\nsampler: {kind: pc, steps: 3, snr: 0.1, corrector_steps: 2}\n")
        #expect(tuned.sampler.snr == 0.1 && tuned.sampler.correctorSteps == 2)
        #expect(errors("classes: [Bag]\nimages: 1\nsampler: {kind: ddim, snr: 0.1}\n")?.description
            .contains("sampler.snr: applies only to the pc sampler, not ddim") == true)
        #expect(errors("classes: [Bag]\nimages: 1\nsampler: {kind: pc, corrector_steps: 0}\n")?.description
            .contains("sampler.corrector_steps") == true)
        #expect(errors("classes: [Bag]\nimages: 1\nsampler: {kind: pc, snr: -1}\n")?.description.contains("sampler.snr") == true)

        let models = packageRoot + "/models"
        let v = JobValidator(catalog: DirectoryModelCatalog(root: models), defaultModel: "fashion-mnist")
        func run(_ sampler: String) throws -> GeneratedImage {
            let spec = try v.validate(Array("classes: [Bag]\nimages: 1\nseed: 3\nsampler: \(sampler)\n".utf8), fileName: "job.yml")
            let cache = ModelCache(root: URL(fileURLWithPath: models, isDirectory: true), budgetBytes: .max)
            return try EngineImageGenerator.sample(job: spec, indices: [0], context: GenerationContext(), cache: cache)[0]
        }
        let two = try run("{kind: pc, steps: 3, snr: 0.1, corrector_steps: 2}")
        let config = try #require(two.recordFields["sampling_configuration"])
        #expect(config.contains("\"snr\":0.1") && config.contains("\"corrector_steps\":2"), "\(config)")
        #expect(two.recordFields["network_evaluations"] == "9")  // 3 kept timesteps x (2 corrector + 1 predictor)
        #expect(try run("{kind: pc, steps: 3}").pixels != two.pixels)
    }
}
