import Foundation
import Testing
@testable import DiffusionEngine

/// Several jobs' chains in one network batch: each job's images are bit-identical to running it
/// alone, the network sees one call per step, and a cancelled member leaves without disturbing the rest.
@Suite struct SharedChainTests {
    static let shape = ImageShape(channels: 1, height: 5, width: 7)
    let net: GaussianDataPredictor

    init() {
        net = GaussianDataPredictor(schedule: SamplingConfiguration().diffusion.noiseSchedule, mean: 0, standardDeviation: 0.5,
                                    classMeans: [0: -0.4, 1: 0.1, 2: 0.5], varianceOutput: 0.25)
    }

    /// A pipeline on the shared network: 12 respaced steps, classifier-free guidance, its own seed.
    func pipeline(seed: UInt64, kind: SamplerKind = .ddpm, weight: Double = 1.5, eta: Double = 0) throws -> SamplingPipeline {
        var c = SamplingConfiguration()
        c.sampler = kind
        c.respacing = kind == .ddim ? .ddim(12) : .sections([12])
        c.guidance = .classifierFree
        c.guidanceScale = weight
        c.nullClass = 3
        c.seed = seed
        if kind == .ddim { c.eta = eta }
        return try SamplingPipeline(configuration: c, predictor: net, imageShape: Self.shape)
    }

    struct Job {
        let pipeline: SamplingPipeline
        let images: [Int]
        let classes: [Int]
    }

    func jobs() throws -> [Job] {
        [Job(pipeline: try pipeline(seed: 7), images: [0, 1, 2], classes: [0, 1, 2]),
         Job(pipeline: try pipeline(seed: 8, weight: 0.5), images: [0], classes: [2]),
         Job(pipeline: try pipeline(seed: 7, weight: 3), images: [5, 4], classes: [1, 1])]
    }

    @Test func eachJobIsBitIdenticalToRunningAlone() throws {
        let jobs = try jobs()
        let alone = try jobs.map { try $0.pipeline.generate(imageIndices: $0.images, classes: $0.classes).array }
        net.calls.removeAll()
        let members = jobs.map { SharedChainMember(pipeline: $0.pipeline, x: $0.pipeline.initialState(imageIndices: $0.images),
                                                   imageIndices: $0.images, classes: $0.classes) }
        let completed = try SharedChain(members).denoise()
        #expect(completed == [12, 12, 12])
        for (i, m) in members.enumerated() {
            #expect(m.x.array == alone[i], "job \(i) differs from its run alone")
        }
        // One call per step, every job's rows and their null-class copies together: 2 x (3 + 1 + 2).
        #expect(net.calls.count == 12 && net.calls.allSatisfy { $0.batch == 12 })
        // Not a trivial pass: the jobs' settings really differ in their images.
        #expect(alone[0][0 ..< 35] != alone[1][0 ..< 35])
    }

    @Test func aCancelledMemberLeavesTheOthersUntouched() throws {
        let jobs = try jobs()
        let alone = try jobs.map { try $0.pipeline.generate(imageIndices: $0.images, classes: $0.classes).array }
        // The second job is cancelled before step 5; its state is then that of its own run cancelled there.
        let second = jobs[1]
        let stopped = second.pipeline.initialState(imageIndices: second.images)
        var done = 0
        #expect(throws: SamplingError.cancelled(completedSteps: 5)) {
            try second.pipeline.denoise(stopped, imageIndices: second.images, classes: second.classes,
                                        progress: { done = $0.completedSteps }, isCancelled: { done >= 5 })
        }
        let members = jobs.map { SharedChainMember(pipeline: $0.pipeline, x: $0.pipeline.initialState(imageIndices: $0.images),
                                                   imageIndices: $0.images, classes: $0.classes) }
        var steps = [0, 0, 0]
        net.calls.removeAll()
        let completed = try SharedChain(members).denoise(progress: { i, p in steps[i] = p.completedSteps },
                                                         isCancelled: { i in i == 1 && steps[1] >= 5 })
        #expect(completed == [12, 5, 12])
        #expect(members[0].x.array == alone[0] && members[2].x.array == alone[2])
        #expect(members[1].x.array == stopped.array)
        // Rows shrink from 12 to 10 once the one-image job leaves.
        #expect(net.calls.map(\.batch) == Array(repeating: 12, count: 5) + Array(repeating: 10, count: 7))
    }

    @Test func chainsThatCannotShareAreRefusedByMember() throws {
        let a = try pipeline(seed: 1)
        let ddim = try pipeline(seed: 1, kind: .ddim, eta: 0.5)   // other timesteps (ddim12 against 12 sections)
        #expect(a.canShareChain(with: try pipeline(seed: 2, weight: 4)))
        #expect(!a.canShareChain(with: ddim))
        let other = GaussianDataPredictor(schedule: SamplingConfiguration().diffusion.noiseSchedule, mean: 0, standardDeviation: 0.5,
                                          varianceOutput: 0.25)
        var c = a.configuration
        c.seed = 3
        #expect(!a.canShareChain(with: try SamplingPipeline(configuration: c, predictor: other, imageShape: Self.shape)))
        let members = [a, ddim].map { SharedChainMember(pipeline: $0, x: $0.initialState(imageIndices: [0]), imageIndices: [0], classes: [1]) }
        #expect {
            try SharedChain(members)
        } throws: { error in
            guard case SamplingError.invalidSetting(let name, let reason) = error else { return false }
            return name == "members" && reason.contains("member 1")
        }
    }
}
