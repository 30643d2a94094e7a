import Foundation
import Testing
@testable import DiffusionEngine

/// DPM-Solver++(2M) against diffusers' own DPMSolverMultistepScheduler (Tests/Fixtures/dpm-solver-steps.safetensors,
/// made by training/make_dpm_solver_fixture.py): the timesteps of its default "linspace" spacing and every state
/// of a whole chain driven by the recorded eps sequence; plus the pipeline's handling of the multistep state.
@Suite struct DPMSolverTests {
    static let reader = try! FixtureReader(FixtureReader.fixtures.appendingPathComponent("dpm-solver-steps.safetensors"))
    static let base = NoiseSchedule(.cosine, steps: 1000)

    /// Step k of tensor `name` ([K, 3, 1, 8, 8]) as a [3, 1, 8, 8] batch.
    static func slice(_ name: String, _ k: Int) -> Tensor {
        let shape = reader.shape(name), per = shape.dropFirst().reduce(1, *)
        return Tensor(shape: Array(shape.dropFirst()), values: Array(reader.floats(name)[(k * per)..<((k + 1) * per)]))
    }

    func checkChain(_ name: String, steps: Int, clip: Bool) throws {
        let schedule = try RespacedSchedule(base: Self.base, respacing: .dpmSolver(steps))
        let sampler = DPMSolverPlusPlusSampler(schedule: schedule, prediction: .epsilon, clipDenoised: clip)
        let expectedTimesteps = Self.reader.integers("\(name).timesteps")
        #expect(sampler.stepCount == expectedTimesteps.count)
        #expect((0..<sampler.stepCount).map(sampler.timestep(at:)) == expectedTimesteps)
        let x = Self.slice("\(name).states", 0)
        let auxiliary = Tensor(shape: x.shape)
        for k in 0..<sampler.stepCount {
            #expect(!sampler.usesNoise(at: k))
            sampler.step(k, x: x, auxiliary: auxiliary, modelOutput: Self.slice("\(name).eps", k), classifierGuidance: nil, noise: nil)
            let expected = Self.slice("\(name).states", k + 1).array
            let worst = zip(x.array, expected).map { abs($0 - $1) / max(1, abs($1)) }.max()!
            #expect(worst < 2e-5, "\(name) step \(k): relative difference \(worst)")
        }
    }

    @Test func matchesDiffusersDefaults() throws {
        try checkChain("n10", steps: 10, clip: false)
        try checkChain("n25", steps: 25, clip: false)
    }

    @Test func clippingMatchesDiffusersThresholdingAtOne() throws {
        try checkChain("n10_clip", steps: 10, clip: true)
    }

    @Test func respacingForm() throws {
        #expect(try TimestepRespacing(parsing: "dpmsolver10") == .dpmSolver(10))
        #expect(TimestepRespacing.dpmSolver(10).description == "dpmsolver10")
        #expect(try TimestepRespacing.dpmSolver(10).timesteps(trainingSteps: 1000)
                == [100, 200, 300, 400, 500, 599, 699, 799, 899, 999])
    }

    /// The pipeline carries the previous x0 per image: a chain split at any step with the auxiliary state
    /// carried gives the same bits, and a resume without it is refused by name.
    @Test func pipelineCarriesTheMultistepState() throws {
        var c = SamplingConfiguration()
        c.sampler = .dpmSolverPlusPlus
        c.respacing = .dpmSolver(8)
        c.diffusion.variance = .fixedSmall
        c.seed = 11
        let predictor = GaussianDataPredictor(schedule: Self.base, mean: 0.2, standardDeviation: 0.5)
        let shape = ImageShape(channels: 1, height: 4, width: 4)
        let pipeline = try SamplingPipeline(configuration: c, predictor: predictor, imageShape: shape)
        let whole = try pipeline.generate(imageIndices: [0, 1, 2], classes: nil)
        for split in 1..<8 {
            let x = pipeline.initialState(imageIndices: [0, 1, 2])
            let auxiliary = pipeline.initialAuxiliaryState(imageCount: 3)!
            try pipeline.denoise(x, auxiliary: auxiliary, imageIndices: [0, 1, 2], classes: nil, steps: 0..<split)
            #expect(throws: SamplingError.self) {
                try pipeline.denoise(Tensor(shape: x.shape), imageIndices: [0, 1, 2], classes: nil, steps: split..<8)
            }
            try pipeline.denoise(x, auxiliary: auxiliary, imageIndices: [0, 1, 2], classes: nil, steps: split..<8)
            #expect(x.array == whole.array, "split at \(split)")
        }
        // One image alone gives the bits it has in the batch.
        let alone = try pipeline.generate(imageIndices: [1], classes: nil)
        #expect(alone.array == Array(whole.array[16..<32]))
    }

    /// On Gaussian data with the exact denoiser, 25 steps land on the data distribution.
    @Test func exactDenoiserReachesTheData() throws {
        var c = SamplingConfiguration()
        c.sampler = .dpmSolverPlusPlus
        c.respacing = .dpmSolver(25)
        c.diffusion.variance = .fixedSmall
        c.clipDenoised = false
        let predictor = GaussianDataPredictor(schedule: Self.base, mean: 0.3, standardDeviation: 0.5)
        let pipeline = try SamplingPipeline(configuration: c, predictor: predictor, imageShape: ImageShape(channels: 1, height: 32, width: 32))
        let m = moments(try pipeline.generate(imageIndices: Array(0..<16), classes: nil))
        #expect(abs(m.mean - 0.3) < 0.02, "mean \(m.mean)")
        #expect(abs(m.variance - 0.25) < 0.02, "variance \(m.variance)")
    }
}
