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
        let total = sampler.stepCount
        let range = steps ?? 0..<total
        let n = imageIndices.count
        guard range.lowerBound >= 0, range.upperBound <= total else {
            throw SamplingError.invalidSetting(name: "steps", reason: "\(range) lies outside the chain 0..<\(total)")
        }
        guard x.shape == imageShape.batch(n) else {
            throw SamplingError.shapeMismatch("state \(x.shape) for \(n) images of \(imageShape)")
        }
        guard imageIndices.allSatisfy({ $0 >= 0 }) else {
            throw SamplingError.invalidSetting(name: "image_indices", reason: "must be non-negative")
        }
        if let classes, classes.count != n {
            throw SamplingError.shapeMismatch("\(classes.count) classes for \(n) images")
        }
        let auxiliaryState: Tensor?
        if sampler.auxiliaryStateCount > 0 {
            if let auxiliary {
                guard auxiliary.count == n * sampler.auxiliaryStateCount * imageShape.elementCount else {
                    throw SamplingError.shapeMismatch("auxiliary state \(auxiliary.shape) for \(n) images of \(imageShape)")
                }
                auxiliaryState = auxiliary
            } else if range.lowerBound == 0 || range.isEmpty {
                auxiliaryState = initialAuxiliaryState(imageCount: n)
            } else {
                throw SamplingError.invalidSetting(
                    name: "auxiliary", reason: "\(configuration.sampler.rawValue) is multistep: resuming at step \(range.lowerBound) needs the auxiliary state carried from the earlier steps")
            }
        } else {
            auxiliaryState = nil
        }
        let guidance = configuration.guidance
        if guidance != .none && classes == nil {
            throw SamplingError.invalidSetting(name: "guidance", reason: "\(guidance.rawValue) guidance needs the target classes")
        }
        let outC = predictor.outputChannels
        let c = imageShape.channels, plane = imageShape.height * imageShape.width, perImage = imageShape.elementCount
        let outputShape = [n, outC, imageShape.height, imageShape.width]
        let classifierFree = guidance == .classifierFree
        let weight = Float(configuration.guidanceScale)

        // Every buffer of the loop is allocated here, once per call.
        let noise = Tensor(shape: imageShape.batch(n))
        var timesteps = [Int](repeating: 0, count: classifierFree ? 2 * n : n)
        // Classifier-free guidance evaluates (x, class) and (x, null) in one batch. Under classifier
        // guidance a network with a null class sees that label (the classifier alone steers the
        // class) unless `guidedNetworkClass` is `requested`; one without sees the requested class.
        let modelClasses: [Int]?
        if classifierFree {
            modelClasses = classes! + [Int](repeating: configuration.nullClass!, count: n)
        } else if guidance == .classifier, configuration.guidedNetworkClass == .null, let null = configuration.nullClass {
            modelClasses = [Int](repeating: null, count: n)
        } else {
            modelClasses = classes
        }
        let doubledInput = classifierFree ? Tensor(shape: imageShape.batch(2 * n)) : nil
        let combinedOutput = classifierFree ? Tensor(shape: outputShape) : nil

        for k in range {
            if isCancelled() { throw SamplingError.cancelled(completedSteps: k) }
            let t = sampler.timestep(at: k)
            for j in timesteps.indices { timesteps[j] = t }
            let output: Tensor
            if let doubledInput, let combinedOutput {
                doubledInput.data.update(from: x.data, count: x.count)
                (doubledInput.data + x.count).update(from: x.data, count: x.count)
                let raw = try predictor.predict(doubledInput, timesteps: timesteps, classes: modelClasses)
                guard raw.shape == [2 * n] + outputShape.dropFirst() else {
                    throw SamplingError.shapeMismatch("network output \(raw.shape), expected \([2 * n] + outputShape.dropFirst())")
                }
                Self.combineClassifierFree(raw, into: combinedOutput, images: n, guidedCount: c * plane,
                                           perImage: outC * plane, weight: weight)
                output = combinedOutput
            } else {
                output = try predictor.predict(x, timesteps: timesteps, classes: modelClasses)
                guard output.shape == outputShape else {
                    throw SamplingError.shapeMismatch("network output \(output.shape), expected \(outputShape)")
                }
            }
            var guidanceTerm: ClassifierGuidanceTerm? = nil
            if guidance == .classifier, let classifier {
                let gradient = try classifier.gradientOfLogProbability(x, timesteps: timesteps, classes: classes!)
                guard gradient.shape == x.shape else {
                    throw SamplingError.shapeMismatch("classifier gradient \(gradient.shape), expected \(x.shape)")
                }
                guidanceTerm = ClassifierGuidanceTerm(gradient: gradient, scale: weight)
            }
            let usesNoise = sampler.usesNoise(at: k)
            if usesNoise {
                for (slot, image) in imageIndices.enumerated() {
                    randomSource.fillStandardNormal(UnsafeMutableBufferPointer(start: noise.data + slot * perImage, count: perImage),
                                                    image: image, draw: k + 1)
                }
            }
            sampler.step(k, x: x, auxiliary: auxiliaryState, modelOutput: output, classifierGuidance: guidanceTerm,
                         noise: usesNoise ? noise : nil)
            if k == total - 1 && configuration.clipDenoised {
                let b = x.buffer
                for j in b.indices { b[j] = min(max(b[j], -1), 1) }
            }
            progress?(SamplingProgress(completedSteps: k + 1, totalSteps: total, timestep: t))
        }
    }

    /// eps~ = (1 + w) cond - w uncond on the first C channels of each image; the rest (learned
    /// variance) is taken from the conditional half. `raw` is [2N, outC, H, W], conditional first.
    static func combineClassifierFree(_ raw: Tensor, into out: Tensor, images n: Int, guidedCount: Int,
                                      perImage: Int, weight w: Float) {
        let unconditionalOffset = n * perImage
        for image in 0..<n {
            let cond = UnsafePointer(raw.data + image * perImage)
            let uncond = UnsafePointer(raw.data + unconditionalOffset + image * perImage)
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
