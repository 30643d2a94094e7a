import Foundation
import Testing
@testable import DiffusionEngine

@Suite struct SamplingConfigurationTests {
    static let shape = ImageShape(channels: 1, height: 4, width: 4)
    static var learned: GaussianDataPredictor {
        GaussianDataPredictor(schedule: NoiseSchedule(.cosine, steps: 1000), mean: 0, standardDeviation: 0.5, varianceOutput: 0)
    }
    static var plain: GaussianDataPredictor {
        GaussianDataPredictor(schedule: NoiseSchedule(.cosine, steps: 1000), mean: 0, standardDeviation: 0.5)
    }

    @Test func codableRoundTripAndDefaults() throws {
        var c = SamplingConfiguration()
        c.sampler = .analyticDDIM
        c.respacing = .sections([10, 15])
        c.eta = 0.3
        c.guidance = .classifierFree
        c.guidanceScale = 2
        c.nullClass = 10
        c.seed = UInt64.max
        let data = try JSONEncoder().encode(c)
        #expect(try JSONDecoder().decode(SamplingConfiguration.self, from: data) == c)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains("\"respacing\":\"10,15\"") && text.contains("\"analytic_ddim\"") && text.contains("\"timestep_input\":\"index\""))

        let partial = try JSONDecoder().decode(SamplingConfiguration.self, from: Data(#"{"sampler": "ddim", "respacing": "ddim50", "langevin": {"levels": 5}}"#.utf8))
        #expect(partial.sampler == .ddim && partial.respacing == .ddim(50))
        #expect(partial.diffusion == DiffusionSettings() && partial.seed == 0 && partial.clipDenoised && partial.eta == 0)
        #expect(partial.langevin.levels == 5 && partial.langevin.stepsPerLevel == 5)
        #expect(throws: (any Error).self) {
            try JSONDecoder().decode(SamplingConfiguration.self, from: Data(#"{"respacing": "ddim0"}"#.utf8))
        }
    }

    @Test func resolvedConfigurationRecordsTheDefaultsUsed() throws {
        var c = SamplingConfiguration()
        let p = try SamplingPipeline(configuration: c, predictor: Self.learned, imageShape: Self.shape)
        #expect(p.configuration.ddpmVariance == .learnedRange)
        c.sampler = .analyticDDPM
        c.diffusion.schedule = .linear
        let a = try SamplingPipeline(configuration: c, predictor: Self.learned, gammaTable: [Double](repeating: 0.5, count: 1000),
                                     imageShape: Self.shape)
        #expect(a.configuration.analyticLastStepClipFactor == 2)
    }

    func rejection(_ predictor: any NoisePredictor = SamplingConfigurationTests.learned, classifier: (any ClassifierGradient)? = nil, gamma: [Double]? = nil,
                   _ configure: (inout SamplingConfiguration) -> Void) -> String? {
        var c = SamplingConfiguration()
        configure(&c)
        do {
            _ = try SamplingPipeline(configuration: c, predictor: predictor, classifier: classifier, gammaTable: gamma, imageShape: Self.shape)
            return nil
        } catch SamplingError.invalidSetting(let name, _) {
            return name
        } catch {
            return "\(error)"
        }
    }

    @Test func meaninglessCombinationsAreRejectedByName() {
        #expect(rejection { $0.sampler = .analyticDDPM } == "sampler")
        #expect(rejection(gamma: [1, 2]) { $0.sampler = .analyticDDIM } == "sampler")
        #expect(rejection(Self.plain) { _ in } == "diffusion.variance")
        #expect(rejection(Self.plain) { $0.diffusion.variance = .fixedSmall; $0.ddpmVariance = .learnedRange } == "ddpm_variance")
        #expect(rejection { $0.sampler = .ddim; $0.ddpmVariance = .fixedLarge } == "ddpm_variance")
        #expect(rejection { $0.eta = 0.5 } == "eta")
        #expect(rejection { $0.sampler = .ddim; $0.eta = 1.5 } == "eta")
        #expect(rejection { $0.guidance = .classifier } == "guidance")
        #expect(rejection { $0.guidance = .classifierFree } == "null_class")
        #expect(rejection { $0.sampler = .langevin; $0.respacing = .ddim(10) } == "respacing")
        #expect(rejection { $0.sampler = .langevin; $0.langevin.levels = 0 } == "langevin.levels")
        #expect(rejection { $0.sampler = .ddim; $0.langevin.levels = 3 } == "langevin")
        #expect(rejection { $0.analyticLastStepClipFactor = 2 } == "analytic_last_step_clip_factor")
        #expect(rejection { $0.respacing = .leading(2000) } == "respacing")
        // Sensible combinations are accepted.
        #expect(rejection { $0.sampler = .ddim; $0.eta = 1 } == nil)
        #expect(rejection { $0.sampler = .langevin; $0.guidance = .classifierFree; $0.nullClass = 10 } == nil)
        #expect(rejection(Self.plain) { $0.diffusion.variance = .fixedSmall; $0.ddpmVariance = .fixedLarge } == nil)
        #expect(rejection(gamma: [Double](repeating: 0.5, count: 1000)) { $0.sampler = .analyticDDIM; $0.eta = 0.2 } == nil)
    }

    @Test func runTimeChecks() throws {
        var c = SamplingConfiguration()
        c.guidance = .classifierFree
        c.nullClass = 10
        let p = try SamplingPipeline(configuration: c, predictor: Self.learned, imageShape: Self.shape)
        #expect(throws: SamplingError.invalidSetting(name: "guidance", reason: "classifier_free guidance needs the target classes")) {
            try p.generate(imageIndices: [0], classes: nil)
        }
        #expect(throws: SamplingError.shapeMismatch("2 classes for 1 images")) { try p.generate(imageIndices: [0], classes: [1, 2]) }
        #expect(throws: SamplingError.self) { try p.denoise(Tensor(shape: [1, 1, 4, 4]), imageIndices: [0], classes: [1], steps: 0..<5000) }
    }

    @Test func pixelConversion() {
        let x = Tensor(shape: [1, 1, 1, 7], values: [-1.5, -1, 0, 0.999, 1, 2, .nan])
        #expect(x.pixelBytes() == [0, 0, 128, 255, 255, 255, 0])
        #expect(x.pixelBytes(rounding: .towardZero) == [0, 0, 127, 254, 255, 255, 0])
        let roundTrip = Tensor(shape: [256], values: (0..<256).map { Float($0) / 127.5 - 1 })
        #expect(roundTrip.pixelBytes() == (0..<256).map { UInt8($0) })
    }
}
