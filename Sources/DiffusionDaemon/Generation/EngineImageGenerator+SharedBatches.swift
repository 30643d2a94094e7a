import DiffusionEngine
import Foundation

/// Batches shared across jobs: the small jobs of a queue that use one network the same way are
/// sampled together in one `SharedChain`, one network call a step for all of them, each image
/// still the pure function of its own job's settings, seed and index.
extension EngineImageGenerator {
    /// Same model, precision, guidance kind, sampler kind, steps, respacing, classifier and sampler parameters
    /// that shape the chain; each job keeps its own seed, eta, variance, guidance scale, clipping.
    public func canShareBatch(_ a: JobSpec, _ b: JobSpec) -> Bool {
        let (x, y) = (a.sampler, b.sampler)
        return a.model == b.model && a.precision == b.precision && a.mode == b.mode && (a.channels, a.height, a.width) == (b.channels, b.height, b.width)
            && x.kind == y.kind && x.steps == y.steps && x.respacing == y.respacing && x.classifier == y.classifier
            && x.langevin == y.langevin && x.snr == y.snr && x.correctorSteps == y.correctorSteps && x.networkLabel == y.networkLabel
    }

    public func generate(members: [BatchMember], context: GenerationContext,
                         isCancelled: @escaping @Sendable (Int) -> Bool) async throws -> [[GeneratedImage]] {
        let cache = cache
        return try await compute.run {
            let prepared = try members.map { try Self.prepare(job: $0.job, indices: $0.indices, cache: cache) }
            let states = prepared.map { $0.pipeline.initialState(imageIndices: $0.indices) }
            let chain: SharedChain
            do {
                chain = try SharedChain(zip(prepared, states).map { p, x in
                    SharedChainMember(pipeline: p.pipeline, x: x, imageIndices: p.indices, classes: p.plan.networkClasses)
                })
            } catch {
                // Settings that looked alike but do not share a chain: one member after the other.
                return try prepared.indices.map { i in isCancelled(i) ? [] : try prepared[i].sample(context: context) }
            }
            let images = members.reduce(0) { $0 + $1.indices.count }
            let completed: [Int]
            var reported = 0
            do {
                completed = try chain.denoise(
                    progress: { _, step in
                        // Once a step, whichever member reports it first.
                        guard step.completedSteps > reported else { return }
                        reported = step.completedSteps
                        context.progress(BatchProgress(images: images, completedSteps: step.completedSteps, totalSteps: step.totalSteps))
                    },
                    isCancelled: { context.shouldStop() || isCancelled($0) })
            } catch SamplingError.cancelled {
                throw CancellationError()
            }
            if context.shouldStop() { throw CancellationError() }
            return zip(prepared, zip(states, completed)).map { p, done in
                done.1 == p.pipeline.stepCount ? p.images(done.0) : []
            }
        }
    }
}
