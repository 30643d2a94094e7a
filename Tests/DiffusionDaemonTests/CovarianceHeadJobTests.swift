import DiffusionEngine
import Foundation
import ModelBundles
import Testing
@testable import DiffusionDaemon

/// SN-DPM and NPR-DPM jobs: accepted when the bundle ships the head, refused by name when it does
/// not, and sampled by the daemon's generator with the head loaded (the tiny fixture bundle, whose
/// SN head the engine's parity test checks against PyTorch).
@Suite struct CovarianceHeadJobTests {
    static let models = packageRoot + "/Tests/Fixtures/bundles"
    static let validator = JobValidator(catalog: DirectoryModelCatalog(root: models), defaultModel: "tiny-unet-cond")

    func job(_ kind: String) -> String {
        "model: tiny-unet-cond\nclasses: [class3]\nimages: 2\nseed: 4\nsampler: {kind: \(kind), steps: 5}\n"
    }

    @Test func headsTheBundleShipsAreUsedTheOthersRefused() throws {
        #expect(DirectoryModelCatalog(root: Self.models).model(named: "tiny-unet-cond")?.covarianceHeads == [.sn])
        do {
            _ = try Self.validator.validate(Array(job("npr-ddpm").utf8), fileName: "job.yml")
            Issue.record("npr-ddpm accepted without an NPR head")
        } catch {
            #expect(error.description.contains("npr-ddpm needs the model's NPR covariance head, and tiny-unet-cond ships none"), "\(error)")
            #expect(error.description.contains("it ships SN"), "\(error)")
        }
        let spec = try Self.validator.validate(Array(job("sn-ddpm").utf8), fileName: "job.yml")
        let cache = ModelCache(root: URL(fileURLWithPath: Self.models, isDirectory: true), budgetBytes: .max)
        let images = try EngineImageGenerator.sample(job: spec, indices: [0, 1], context: GenerationContext(), cache: cache)
        #expect(cache.names == ["tiny-unet-cond+sn"])
        #expect(images[0].recordFields["sampling_configuration"]?.contains("\"sampler\":\"sn_ddpm\"") == true)

        // The same chain built by hand from the bundle's UNet with its SN head.
        let bundle = try ModelBundle(directory: URL(fileURLWithPath: Self.models + "/tiny-unet-cond", isDirectory: true))
        let plan = try SamplingPlan(job: spec, manifest: bundle.manifest, indices: [0, 1], gamma: try bundle.gammaTables())
        let pipeline = try SamplingPipeline(configuration: plan.configuration,
                                            predictor: UNetNoisePredictor(try bundle.makeUNet(covarianceHead: .sn)),
                                            classifier: nil, gammaTable: plan.gamma, imageShape: ImageShape(channels: 1, height: 16, width: 16))
        let x = try pipeline.generate(imageIndices: [0, 1], classes: plan.networkClasses)
        #expect(images.flatMap(\.pixels) == x.pixelBytes())
        // And not the Analytic-DPM chain: the head's variances are in use.
        let analytic = try Self.validator.validate(Array(job("ddpm").utf8), fileName: "job.yml")
        #expect(try EngineImageGenerator.sample(job: analytic, indices: [0, 1], context: GenerationContext(), cache: cache).flatMap(\.pixels)
                != x.pixelBytes())
    }
}
