import Foundation
import Testing
@testable import DiffusionEngine

/// The samples of a job must not depend on how its images are batched, ordered or resumed.
@Suite struct DeterminismTests {
    static let shape = ImageShape(channels: 1, height: 5, width: 7)   // 35 elements: exercises the partial SIMD lanes
    static let classes = [0, 1, 2, 0, 1, 2]

    func pipeline(_ configure: (inout SamplingConfiguration) -> Void = { _ in }) throws -> SamplingPipeline {
        var c = SamplingConfiguration()
        c.respacing = .sections([20])
        c.guidance = .classifierFree
        c.guidanceScale = 1.5
        c.nullClass = 3
        c.seed = 0xfeed_beef_0123
        configure(&c)
        let net = GaussianDataPredictor(schedule: c.diffusion.noiseSchedule, mean: 0, standardDeviation: 0.5,
                                        classMeans: [0: -0.4, 1: 0.1, 2: 0.5], varianceOutput: 0.25)
        return try SamplingPipeline(configuration: c, predictor: net, imageShape: Self.shape)
    }

    /// The per-image arrays of generating `order` in the given batches.
    func generate(_ batches: [[Int]], _ configure: (inout SamplingConfiguration) -> Void = { _ in }) throws -> [Int: [Float]] {
        var result: [Int: [Float]] = [:]
        let p = try pipeline(configure)
        for batch in batches {
            let x = try p.generate(imageIndices: batch, classes: batch.map { Self.classes[$0] })
            for (slot, image) in batch.enumerated() {
                result[image] = Array(x.array[(slot * 35)..<((slot + 1) * 35)])
            }
        }
        return result
    }

    @Test(arguments: [SamplerKind.ddpm, .ddim, .langevin])
    func batchingAndOrderDoNotMatter(_ kind: SamplerKind) throws {
        let configure: (inout SamplingConfiguration) -> Void = { c in
            c.sampler = kind
            if kind == .ddim { c.eta = 0.7 }
            if kind == .langevin { c.respacing = .full; c.langevin = LangevinParameters(levels: 3, stepsPerLevel: 4) }
        }
        let all = try generate([[0, 1, 2, 3, 4, 5]], configure)
        #expect(try generate((0..<6).map { [$0] }, configure) == all)
        #expect(try generate([[0, 1, 2], [3, 4, 5]], configure) == all)
        #expect(try generate([[5, 3, 1], [0, 2, 4]], configure) == all)
        #expect(all[0] != all[3])   // same class, different image index
    }

    @Test func resumeFromTheMiddleIsBitIdentical() throws {
        let images = [0, 1, 2, 3, 4, 5]
        let full = try pipeline().generate(imageIndices: images, classes: Self.classes)

        // Cancel after 8 steps, then finish with a fresh pipeline from the saved state.
        let first = try pipeline()
        let state = first.initialState(imageIndices: images)
        var completed = 0
        #expect(throws: SamplingError.cancelled(completedSteps: 8)) {
            try first.denoise(state, imageIndices: images, classes: Self.classes,
                              progress: { completed = $0.completedSteps }, isCancelled: { completed >= 8 })
        }
        let saved = state.array
        let resumedState = Tensor(shape: Self.shape.batch(6), values: saved)
        let second = try pipeline()
        try second.denoise(resumedState, imageIndices: images, classes: Self.classes, steps: 8..<second.stepCount)
        #expect(resumedState.array == full.array)

        // Resuming only some of the images in another batch gives the same images.
        let partial = Tensor(shape: Self.shape.batch(2), values: Array(saved[(4 * 35)...]))
        try second.denoise(partial, imageIndices: [4, 5], classes: [1, 2], steps: 8..<20)
        #expect(partial.array == Array(full.array[(4 * 35)...]))
    }

    @Test func seedChangesEverything() throws {
        let a = try generate([[0, 1]])
        let b = try generate([[0, 1]]) { $0.seed = 1 }
        #expect(a[0] != b[0] && a[1] != b[1])
        #expect(try generate([[0, 1]]) == a)
    }

    @Test func progressReportsEveryStepWithOriginalTimesteps() throws {
        var c = SamplingConfiguration()
        c.sampler = .ddim
        c.respacing = .ddim(10)
        c.diffusion.variance = .fixedSmall
        let net = GaussianDataPredictor(schedule: c.diffusion.noiseSchedule, mean: 0, standardDeviation: 0.5)
        let p = try SamplingPipeline(configuration: c, predictor: net, imageShape: Self.shape)
        var seen: [SamplingProgress] = []
        _ = try p.generate(imageIndices: [0, 1], classes: nil, progress: { seen.append($0) })
        #expect(seen.map(\.timestep) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
        #expect(seen.map(\.completedSteps) == Array(1...10))
        #expect(net.calls.map(\.timesteps) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0].map { [$0, $0] })
    }
}
