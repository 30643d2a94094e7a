import Foundation
import Testing
@testable import DiffusionEngine
import ModelBundles

/// Analytic-DPM's Gamma table as the engine estimates it, against closed forms and across resumption.
@Suite struct GammaEstimatorTests {
    /// Images x0 ~ N(mu, s^2) per element, drawn from a seeded Philox stream independent of the estimator's.
    static func gaussianImages(count: Int, mean: Double, standardDeviation: Double) -> Tensor {
        let x = Tensor(shape: [count, 1, 4, 4])
        let source = PhiloxNormalSource(seed: 99)
        for i in 0..<count {
            let row = UnsafeMutableBufferPointer(start: x.data + i * 16, count: 16)
            source.fillStandardNormal(row, image: i, draw: 7)
            for j in 0..<16 { row[j] = Float(mean + standardDeviation * Double(row[j])) }
        }
        return x
    }

    /// With the exact denoiser of Gaussian data, Gamma_t = (1 - abar)/(abar s^2 + 1 - abar) for the
    /// right mean (the class-conditional table), and (1 - abar)(V + abar mu^2)/V^2 with V = abar s^2 + 1 - abar
    /// for a denoiser that assumes mean 0 (the null class here), for every prediction type.
    @Test(arguments: [PredictionType.epsilon, .sample, .velocity])
    func matchesClosedForm(_ prediction: PredictionType) throws {
        let settings = DiffusionSettings(schedule: .cosine, steps: 1000, prediction: prediction, variance: .learnedRange)
        let schedule = NoiseSchedule(.cosine, steps: 1000)
        let mu = 0.3, s = 0.5, m = 4096
        let net = GaussianDataPredictor(schedule: schedule, mean: 0, standardDeviation: s, classMeans: [3: mu],
                                        prediction: prediction, varianceOutput: 0.25)
        let images = Self.gaussianImages(count: m, mean: mu, standardDeviation: s)
        let estimator = try GammaEstimator(network: net, settings: settings, images: images,
                                           labels: Array(repeating: 3, count: m), nullClass: 10)
        var sums = GammaEstimator.Sums(timesteps: 1000, conditional: true)
        let checked = [0, 1, 50, 250, 500, 750, 900, 990, 999]
        for t in checked {
            var lo = 0
            while lo < m { try estimator.accumulate(timestep: t, images: lo..<min(lo + 1000, m), into: &sums); lo += 1000 }
        }
        let (unconditional, conditional) = sums.tables
        for t in checked {
            let abar = schedule.alphasCumprod[t]
            let v = abar * s * s + 1 - abar
            let expectedConditional = (1 - abar) / v
            let expectedNull = (1 - abar) * (v + abar * mu * mu) / (v * v)
            // Each estimate averages m * 16 squared normals: relative std about 0.55 %.
            #expect(abs(conditional![t] / expectedConditional - 1) < 0.03, "t \(t): \(conditional![t]) vs \(expectedConditional)")
            #expect(abs(unconditional[t] / expectedNull - 1) < 0.03, "t \(t): \(unconditional[t]) vs \(expectedNull)")
        }
        #expect(sums.counts[500] == m && sums.counts[499] == 0)
        #expect(unconditional[499].isNaN)
    }

    @Test func rejectsImagesThatDoNotContinueTheCount() throws {
        let schedule = NoiseSchedule(.cosine, steps: 1000)
        let net = GaussianDataPredictor(schedule: schedule, mean: 0, standardDeviation: 1)
        let estimator = try GammaEstimator(network: net, settings: DiffusionSettings(), images: Self.gaussianImages(count: 8, mean: 0, standardDeviation: 1),
                                           labels: Array(repeating: 0, count: 8), nullClass: nil)
        var sums = GammaEstimator.Sums(timesteps: 1000, conditional: false)
        #expect(throws: EngineError.self) { try estimator.accumulate(timestep: 3, images: 4..<8, into: &sums) }
        #expect(throws: EngineError.self) { try estimator.accumulate(timestep: 1000, images: 0..<8, into: &sums) }
    }

    /// A copy of the tiny UNet bundle whose schedule has `steps` steps (to keep the run short).
    static func bundleCopy(steps: Int) throws -> URL {
        let source = FixtureReader.fixtures.appendingPathComponent("bundles/tiny-unet-cond")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gamma-\(UUID().uuidString)/tiny")
        try FileManager.default.createDirectory(at: dir.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: source, to: dir)
        let manifestURL = dir.appendingPathComponent("model.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: manifestURL)) as! [String: Any]
        var diffusion = json["diffusion"] as! [String: Any]
        diffusion["steps"] = steps
        json["diffusion"] = diffusion
        try JSONSerialization.data(withJSONObject: json).write(to: manifestURL)
        return dir
    }

    /// Interrupted after its first timestep and run again, the computation writes the same table,
    /// bit for bit, as an uninterrupted run; the bundle then loads it, checksum verified.
    @Test func resumedRunIsBitIdenticalAndRecorded() throws {
        let images = Self.gaussianImages(count: 80, mean: 0, standardDeviation: 0.5)
        images.reshape([5, 1, 16, 16])
        let labels = [0, 1, 2, 3, 4]
        let whole = try Self.bundleCopy(steps: 6), pieces = try Self.bundleCopy(steps: 6)
        defer { try? FileManager.default.removeItem(at: whole.deletingLastPathComponent()); try? FileManager.default.removeItem(at: pieces.deletingLastPathComponent()) }

        #expect(try GammaTableComputation(bundle: ModelBundle(directory: whole), imagesPerTimestep: 5).run(images: images, labels: labels))
        let interrupted = GammaTableComputation(bundle: try ModelBundle(directory: pieces), imagesPerTimestep: 5)
        var reports = 0
        #expect(try interrupted.run(images: images, labels: labels, timeLimit: 0, saveEvery: 1) { _ in reports += 1 } == false)
        #expect(reports == 1 && FileManager.default.fileExists(atPath: interrupted.progressPath))
        var resumedFrom = -1
        #expect(try GammaTableComputation(bundle: ModelBundle(directory: pieces), imagesPerTimestep: 5)
            .run(images: images, labels: labels) { p in if resumedFrom < 0 { resumedFrom = p.timestepsDone } })
        #expect(resumedFrom == 2, "the resumed run starts after the saved timestep")
        #expect(!FileManager.default.fileExists(atPath: interrupted.progressPath))

        let a = try Data(contentsOf: whole.appendingPathComponent("gamma.safetensors"))
        let b = try Data(contentsOf: pieces.appendingPathComponent("gamma.safetensors"))
        #expect(a == b)
        let bundle = try ModelBundle(directory: pieces)
        let tables = try #require(try bundle.gammaTables())
        #expect(tables.unconditional.count == 6 && tables.conditional?.count == 6)
        #expect(tables.unconditional.allSatisfy { $0.isFinite && $0 > 0 })
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: pieces.appendingPathComponent("model.json"))) as! [String: Any]
        let record = try #require(json["analytic_dpm"] as? [String: Any])
        #expect(record["images_per_timestep"] as? Int == 5)
        #expect(record["wall_seconds"] != nil && record["computed_by"] != nil)
    }
}
