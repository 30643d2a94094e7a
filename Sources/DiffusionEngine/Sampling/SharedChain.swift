import Foundation

/// One pipeline's images in a shared chain: its state, carried in place, and the classes of its rows.
public struct SharedChainMember {
    /// The pipeline: the member's own settings (seed, eta, guidance scale, clipping).
    public let pipeline: SamplingPipeline
    /// The state [N, C, H, W], updated in place.
    public let x: Tensor
    /// A multistep sampler's auxiliary state (see `SamplingPipeline.denoise`).
    public let auxiliary: Tensor?
    /// The image index of each row (the noise keys).
    public let imageIndices: [Int]
    /// The class of each row; nil for unconditional sampling.
    public let classes: [Int]?

    /// Pairs a pipeline with its images.
    public init(pipeline: SamplingPipeline, x: Tensor, auxiliary: Tensor? = nil, imageIndices: [Int], classes: [Int]?) {
        self.pipeline = pipeline
        self.x = x
        self.auxiliary = auxiliary
        self.imageIndices = imageIndices
        self.classes = classes
    }
}

/// Several pipelines' chains run together: one network call (and one classifier call) per step for
/// every member's rows, each member stepped by its own sampler with its own noise.
///
/// Members must share the network (and the classifier under classifier guidance), the guidance
/// kind and the timestep of every step: `SamplingPipeline.canShareChain(with:)` says whether two do.
/// Because the network's per-row outputs do not depend on their batch mates (the ChunkLadder's
/// guarantee), each member's images are bit-identical to `denoise` of that member alone.
public struct SharedChain {
    /// The members, in row order.
    public let members: [SharedChainMember]

    /// Checks that the members can share their network calls.
    public init(_ members: [SharedChainMember]) throws {
        guard let first = members.first else {
            throw SamplingError.invalidSetting(name: "members", reason: "a shared chain needs at least one member")
        }
        for (i, m) in members.enumerated().dropFirst() where !first.pipeline.canShareChain(with: m.pipeline) {
            throw SamplingError.invalidSetting(
                name: "members", reason: "member \(i) (\(m.pipeline.configuration.sampler.rawValue), \(m.pipeline.stepCount) steps, "
                    + "\(m.pipeline.configuration.guidance.rawValue)) cannot share network calls with member 0")
        }
        self.members = members
    }

    /// Runs chain steps `steps` (default all) of every member in place; `isCancelled(i)` is asked for
    /// member i before every step: a cancelled member leaves the batch with its state after the steps
    /// it completed, reported in the result, and the others go on. Returns each member's completed steps.
    @discardableResult
    public func denoise(steps: Range<Int>? = nil, progress: ((Int, SamplingProgress) -> Void)? = nil,
                        isCancelled: (Int) -> Bool = { _ in false }) throws -> [Int] {
        let lead = members[0].pipeline
        let total = lead.stepCount
        let range = steps ?? 0..<total
        let states = try members.map { try $0.pipeline.chainState(for: $0, steps: range) }
        let conditional = states[0].modelClasses != nil
        if let i = states.firstIndex(where: { ($0.modelClasses != nil) != conditional }) {
            throw SamplingError.invalidSetting(name: "members", reason: "member \(i) \(conditional ? "lacks" : "has") classes where member 0 \(conditional ? "has" : "lacks") them")
        }
        let shape = lead.imageShape
        let classifierFree = lead.configuration.guidance == .classifierFree
        let perImage = shape.elementCount, outPerImage = lead.predictor.outputChannels * shape.height * shape.width
        let copies = classifierFree ? 2 : 1
        // Every tensor of the loop is allocated here, once per call (sized for all members; a
        // cancelled member shrinks the batch in place).
        let input = Tensor(shape: shape.batch(copies * members.reduce(0) { $0 + $1.imageIndices.count }))
        var classes: [Int] = []
        var timesteps: [Int] = []
        var completed = members.map { _ in range.lowerBound }
        var active = Array(members.indices)
        for k in range {
            active.removeAll { isCancelled($0) }
            if active.isEmpty { break }
            let rows = active.reduce(0) { $0 + members[$1].imageIndices.count }
            let t = lead.sampler.timestep(at: k)
            // The rows of every active member, then (classifier-free) their null-class copies.
            input.reshape(shape.batch(copies * rows))
            classes.removeAll(keepingCapacity: true)
            var offset = 0
            for copy in 0 ..< copies {
                for i in active {
                    let m = members[i]
                    (input.data + offset * perImage).update(from: m.x.data, count: m.x.count)
                    offset += m.imageIndices.count
                    classes.append(contentsOf: copy == 0 ? states[i].modelClasses ?? [] : states[i].nullClasses)
                }
            }
            timesteps = [Int](repeating: t, count: copies * rows)
            let raw = try lead.predictor.predict(input, timesteps: timesteps, classes: conditional ? classes : nil)
            guard raw.count == copies * rows * outPerImage else {
                throw SamplingError.shapeMismatch("network output \(raw.shape) for \(copies * rows) rows of \(outPerImage) values")
            }
            var gradient: Tensor? = nil
            if lead.configuration.guidance == .classifier, let classifier = lead.classifier {
                let targets = active.flatMap { members[$0].classes! }
                gradient = try classifier.gradientOfLogProbability(input, timesteps: timesteps, classes: targets)
                guard gradient!.count == rows * perImage else {
                    throw SamplingError.shapeMismatch("classifier gradient \(gradient!.shape), expected \(shape.batch(rows))")
                }
            }
            var row = 0
            for i in active {
                let m = members[i], s = states[i], n = m.imageIndices.count
                if classifierFree {
                    SamplingPipeline.combineClassifierFree(raw, firstRow: row, rows: rows, into: s.output, images: n,
                                                           guidedCount: perImage, perImage: outPerImage,
                                                           weight: Float(m.pipeline.configuration.guidanceScale))
                } else {
                    s.output.data.update(from: raw.data + row * outPerImage, count: n * outPerImage)
                }
                var term: ClassifierGuidanceTerm? = nil
                if let gradient, let g = s.gradient {
                    g.data.update(from: gradient.data + row * perImage, count: n * perImage)
                    term = ClassifierGuidanceTerm(gradient: g, scale: Float(m.pipeline.configuration.guidanceScale))
                }
                try m.pipeline.step(k, state: s, member: m, classifierGuidance: term)
                row += n
                completed[i] = k + 1
                progress?(i, SamplingProgress(completedSteps: k + 1, totalSteps: total, timestep: t))
            }
        }
        return completed
    }
}

/// A member's buffers and resolved inputs, allocated once per call.
struct ChainState {
    /// The classes the network sees for the member's rows (nil: unconditional).
    let modelClasses: [Int]?
    /// The null class for each row (classifier-free guidance's second copy), else empty.
    let nullClasses: [Int]
    let auxiliary: Tensor?
    let output: Tensor
    let noise: Tensor
    let gradient: Tensor?
}

extension SamplingPipeline {
    /// Whether this pipeline's chain can share network calls with `other`'s: the same network and
    /// classifier objects, image shape, guidance kind, step count and timestep at every step.
    public func canShareChain(with other: SamplingPipeline) -> Bool {
        func same(_ a: Any?, _ b: Any?) -> Bool {
            switch (a, b) {
            case (nil, nil): true
            case let (a?, b?): type(of: a) is AnyClass && (a as AnyObject) === (b as AnyObject)
            default: false
            }
        }
        guard same(predictor, other.predictor), same(classifier, other.classifier), imageShape == other.imageShape,
              configuration.guidance == other.configuration.guidance, stepCount == other.stepCount else { return false }
        return (0 ..< stepCount).allSatisfy { sampler.timestep(at: $0) == other.sampler.timestep(at: $0) }
    }

    /// Validates a member for steps `range` and allocates its buffers.
    func chainState(for m: SharedChainMember, steps range: Range<Int>) throws -> ChainState {
        let total = sampler.stepCount, n = m.imageIndices.count
        guard range.lowerBound >= 0, range.upperBound <= total else {
            throw SamplingError.invalidSetting(name: "steps", reason: "\(range) lies outside the chain 0..<\(total)")
        }
        guard m.x.shape == imageShape.batch(n) else {
            throw SamplingError.shapeMismatch("state \(m.x.shape) for \(n) images of \(imageShape)")
        }
        guard m.imageIndices.allSatisfy({ $0 >= 0 }) else {
            throw SamplingError.invalidSetting(name: "image_indices", reason: "must be non-negative")
        }
        if let classes = m.classes, classes.count != n {
            throw SamplingError.shapeMismatch("\(classes.count) classes for \(n) images")
        }
        let auxiliaryState: Tensor?
        if sampler.auxiliaryStateCount > 0 {
            if let auxiliary = m.auxiliary {
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
        if guidance != .none && m.classes == nil {
            throw SamplingError.invalidSetting(name: "guidance", reason: "\(guidance.rawValue) guidance needs the target classes")
        }
        // Classifier-free guidance evaluates (x, class) and (x, null). Under classifier guidance a
        // network with a null class sees that label (the classifier alone steers the class) unless
        // `guidedNetworkClass` is `requested`; one without sees the requested class.
        let modelClasses: [Int]?
        if guidance == .classifier, configuration.guidedNetworkClass == .null, let null = configuration.nullClass {
            modelClasses = [Int](repeating: null, count: n)
        } else {
            modelClasses = m.classes
        }
        let nullClasses = guidance == .classifierFree ? [Int](repeating: configuration.nullClass!, count: n) : []
        return ChainState(modelClasses: modelClasses, nullClasses: nullClasses, auxiliary: auxiliaryState,
                          output: Tensor(shape: [n, predictor.outputChannels, imageShape.height, imageShape.width]),
                          noise: Tensor(shape: imageShape.batch(n)),
                          gradient: guidance == .classifier ? Tensor(shape: imageShape.batch(n)) : nil)
    }

    /// Step k of one member, from its network output: its own noise, its sampler, the final clip.
    func step(_ k: Int, state s: ChainState, member m: SharedChainMember, classifierGuidance: ClassifierGuidanceTerm?) throws {
        let usesNoise = sampler.usesNoise(at: k)
        let perImage = imageShape.elementCount
        if usesNoise {
            for (slot, image) in m.imageIndices.enumerated() {
                randomSource.fillStandardNormal(UnsafeMutableBufferPointer(start: s.noise.data + slot * perImage, count: perImage),
                                                image: image, draw: k + 1)
            }
        }
        sampler.step(k, x: m.x, auxiliary: s.auxiliary, modelOutput: s.output, classifierGuidance: classifierGuidance,
                     noise: usesNoise ? s.noise : nil)
        if k == sampler.stepCount - 1 && configuration.clipDenoised {
            let b = m.x.buffer
            for j in b.indices { b[j] = min(max(b[j], -1), 1) }
        }
    }
}
