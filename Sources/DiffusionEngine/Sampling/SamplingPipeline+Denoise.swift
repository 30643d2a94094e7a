import Foundation

/// The reverse chain of a SamplingPipeline: network evaluations, guidance and sampler steps.
extension SamplingPipeline {
    /// Runs chain steps `steps` (default all) on the state x in place.
    ///
    /// `isCancelled` is checked before every step; on cancellation it throws
    /// `SamplingError.cancelled(completedSteps:)` and x holds the state after that many steps, so that
    /// `denoise(x, ..., steps: completed..<stepCount)` finishes the job with identical bits. After the
    /// last step x is clamped to [-1, 1] when `clipDenoised` is on. A multistep sampler
    /// (`auxiliaryStateCount` > 0) also carries `auxiliary` (from `initialAuxiliaryState`), updated in
    /// place; it may be nil only when the range starts at step 0 (then the pipeline holds it).
    public func denoise(_ x: Tensor, auxiliary: Tensor? = nil, imageIndices: [Int], classes: [Int]?, steps: Range<Int>? = nil,
                        progress: ((SamplingProgress) -> Void)? = nil, isCancelled: () -> Bool = { false }) throws {
        let range = steps ?? 0..<sampler.stepCount
        let chain = try SharedChain([SharedChainMember(pipeline: self, x: x, auxiliary: auxiliary, imageIndices: imageIndices, classes: classes)])
        let completed = try chain.denoise(steps: range, progress: progress.map { report in { _, p in report(p) } },
                                          isCancelled: { _ in isCancelled() })
        if completed[0] < range.upperBound { throw SamplingError.cancelled(completedSteps: completed[0]) }
    }

    /// eps~ = (1 + w) cond - w uncond on the first C channels of each of n images; the rest (learned
    /// variance) is taken from the conditional half. `raw` is [2 rows, outC, H, W], the conditional
    /// rows first; the images are rows firstRow ..< firstRow + n of each half.
    static func combineClassifierFree(_ raw: Tensor, firstRow: Int, rows: Int, into out: Tensor, images n: Int, guidedCount: Int,
                                      perImage: Int, weight w: Float) {
        let unconditionalOffset = rows * perImage
        for image in 0..<n {
            let cond = UnsafePointer(raw.data + (firstRow + image) * perImage)
            let uncond = UnsafePointer(raw.data + unconditionalOffset + (firstRow + image) * perImage)
            let dst = out.data + image * perImage
            var j = 0
            while j < guidedCount {
                let lanes = min(16, guidedCount - j)
                let mixed = (1 + w) * VectorLanes.load(cond + j, lanes) - w * VectorLanes.load(uncond + j, lanes)
                VectorLanes.store(mixed, dst + j, lanes)
                j += 16
            }
            if perImage > guidedCount {
                (dst + guidedCount).update(from: cond + guidedCount, count: perImage - guidedCount)
            }
        }
    }
}
