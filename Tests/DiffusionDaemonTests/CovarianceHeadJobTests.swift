import DiffusionEngine
import Digests
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

    /// A head that records other UNet weights than the bundle's is refused at load, by name.
    @Test func aHeadTrainedOnOtherWeightsIsRefused() throws {
        let dir = makeTempDir("stale-head") + "/tiny-unet-cond"
        defer { try? FileManager.default.removeItem(atPath: (dir as NSString).deletingLastPathComponent) }
        try FileManager.default.copyItem(atPath: Self.models + "/tiny-unet-cond", toPath: dir)
        // Rewrite the head's safetensors header with metadata naming other weights.
        let path = dir + "/sn-head.safetensors"
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let n = Int(bytes[0 ..< 8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
        var header = try #require(try JSONSerialization.jsonObject(with: Data(bytes[8 ..< 8 + n])) as? [String: Any])
        header["__metadata__"] = ["unet_sha256": String(repeating: "ab", count: 32)]
        var json = [UInt8](try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while json.count % 8 != 0 { json.append(0x20) }
        let length = (0 ..< 8).map { UInt8((UInt64(json.count) >> (8 * UInt64($0))) & 0xFF) }
        let rewritten = length + json + bytes[(8 + n)...]
        try Data(rewritten).write(to: URL(fileURLWithPath: path))
        let manifestPath = dir + "/model.json"
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: manifestPath))) as? [String: Any])
        var files = try #require(manifest["files"] as? [String: String])
        files["sn-head.safetensors"] = SHA256Hex.of(rewritten)
        manifest["files"] = files
        try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys]).write(to: URL(fileURLWithPath: manifestPath))
        let bundle = try ModelBundle(directory: URL(fileURLWithPath: dir, isDirectory: true))
        do {
            _ = try bundle.makeUNet(covarianceHead: .sn)
            Issue.record("a head trained on other weights was loaded")
        } catch {
            #expect("\(error)".contains("was trained on other UNet weights"), "\(error)")
        }
    }
}
