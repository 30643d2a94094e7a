import Foundation

/// guided-diffusion's EncoderUNetModel: a noisy-image classifier p(y | x_t, t) with an
/// "adaptive" (average pool + 1x1 conv) or "attention" (AttentionPool2d) head, and the hand-written
/// gradient of log p(y | x_t, t) with respect to x_t used for classifier guidance.
public final class NoisyClassifier: @unchecked Sendable {
    /// The architecture the network was built from.
    public let architecture: ADMArchitecture
    let trunk: ADMTrunk
    let outNorm: GroupNormParameters
    let head: ClassifierHead
    private var plans: [Int: ClassifierPlan] = [:]
    private let lock = NSLock()

    /// Builds the classifier from its architecture ("adm-encoder") and state-dict tensors.
    /// Throws on missing keys, unexpected keys or wrong shapes.
    public init(architecture a: ADMArchitecture, weights: [String: Tensor]) throws {
        guard a.type == "adm-encoder" else { throw EngineError.invalidArchitecture("expected type adm-encoder, got \(a.type)") }
        architecture = a
        (trunk, outNorm, head) = try NoisyClassifier.readWeights(a, WeightReader(weights))
    }

    @discardableResult
    static func readWeights(_ a: ADMArchitecture, _ r: WeightReader) throws -> (ADMTrunk, GroupNormParameters, ClassifierHead) {
        let trunk = try ADMTrunk(a, r, withOutputBlocks: false)
        let ch = trunk.finalChannels
        let outNorm = try GroupNormParameters(r, "out.0", channels: ch)
        let head: ClassifierHead
        switch a.pool ?? "" {
        case "adaptive":
            head = .adaptive(try ConvParameters(r, "out.3", in: ch, out: a.outChannels, kernel: 1, padding: 0))
        case "attention":
            guard a.numHeadChannels > 0, ch % a.numHeadChannels == 0 else {
                throw EngineError.invalidArchitecture("attention pool needs num_head_channels dividing \(ch)")
            }
            let tokens = trunk.middle.outSize * trunk.middle.outSize + 1
            head = .attention(AttentionPoolParameters(
                positional: try r.take("out.2.positional_embedding", [ch, tokens]),
                qkv: try LinearParameters(r, "out.2.qkv_proj", in: ch, out: 3 * ch, conv1d: true),
                proj: try LinearParameters(r, "out.2.c_proj", in: ch, out: a.outChannels, conv1d: true),
                heads: ch / a.numHeadChannels))
        default:
            throw EngineError.invalidArchitecture("unsupported pool '\(a.pool ?? "nil")' (adaptive or attention)")
        }
        try r.finish()
        return (trunk, outNorm, head)
    }

    /// Number of classes (logits per image).
    public var classCount: Int { architecture.outChannels }

    private func plan(batch: Int, gradient: Bool) -> ClassifierPlan {
        let key = gradient ? -batch : batch
        if let p = plans[key] { return p }
        ComputeRuntime.prepareCallingThread()
        let p = ClassifierPlan(self, batch: batch, training: gradient)
        plans[key] = p
        return p
    }

    /// Drops the cached evaluation plans.
    public func releasePlans() { lock.lock(); plans.removeAll(); lock.unlock() }

    private func check(_ x: Tensor, _ timesteps: [Int]) throws -> Int {
        let a = architecture
        guard x.shape.count == 4, x.shape[1] == a.inChannels, x.shape[2] == a.imageSize, x.shape[3] == a.imageSize else {
            throw EngineError.invalidInput("x has shape \(x.shape), expected [N, \(a.inChannels), \(a.imageSize), \(a.imageSize)]")
        }
        guard x.shape[0] > 0, timesteps.count == x.shape[0] else { throw EngineError.invalidInput("\(timesteps.count) timesteps for batch \(x.shape[0])") }
        return x.shape[0]
    }

    /// Logits [N, classes] for x [N, C, H, W] (NCHW) at the original timestep indices.
    public func logits(_ x: Tensor, timesteps: [Int]) throws -> Tensor {
        let n = try check(x, timesteps)
        let out = Tensor(shape: [n, classCount])
        lock.lock(); defer { lock.unlock() }
        ComputeRuntime.prepareCallingThread()
        plan(batch: n, gradient: false).forward(self, x: x, timesteps: timesteps, logits: out)
        return out
    }

    /// Logits and d/dx of sum_i log_softmax(logits_i)[classes_i] (the classifier-guidance gradient).
    public func logProbabilityGradient(_ x: Tensor, timesteps: [Int], classes: [Int]) throws -> (logits: Tensor, gradient: Tensor) {
        let n = try check(x, timesteps)
        let logits = Tensor(shape: [n, classCount]), grad = Tensor(shape: x.shape)
        try logProbabilityGradient(x, timesteps: timesteps, classes: classes, logits: logits, gradient: grad)
        return (logits, grad)
    }

    /// As `logProbabilityGradient(_:timesteps:classes:)`, writing into preallocated tensors
    /// (logits [N, classes], gradient shaped like x).
    public func logProbabilityGradient(_ x: Tensor, timesteps: [Int], classes: [Int], logits: Tensor, gradient: Tensor) throws {
        let n = try check(x, timesteps)
        guard classes.count == n, classes.allSatisfy({ $0 >= 0 && $0 < classCount }) else {
            throw EngineError.invalidInput("need \(n) classes in 0..<\(classCount)")
        }
        guard logits.shape == [n, classCount], gradient.shape == x.shape else {
            throw EngineError.invalidInput("output shapes \(logits.shape), \(gradient.shape)")
        }
        lock.lock(); defer { lock.unlock() }
        ComputeRuntime.prepareCallingThread()
        let p = plan(batch: n, gradient: true)
        p.forward(self, x: x, timesteps: timesteps, logits: logits)
        p.backward(self, classes: classes, logits: logits, gradient: gradient)
    }
}

/// AttentionPool2d weights; `positional` is [C, tokens] as stored.
struct AttentionPoolParameters {
    let positional: Tensor
    let qkv: LinearParameters, proj: LinearParameters
    let heads: Int
}

/// The classifier's output head.
enum ClassifierHead {
    case adaptive(ConvParameters)
    case attention(AttentionPoolParameters)
}

/// The classifier's plan for one batch size, with intermediates kept when it serves gradients.
final class ClassifierPlan {
    let core: ADMPlan
    let training: Bool
    let size: Int, channels: Int, pixels: Int, classes: Int
    let headNorm: GroupNormState
    let headAct: Int, pooled: Int
    // attention pool
    let tokensBuf: Int, qkvBuf: Int, probs: Int, positionalT: Int
    // gradients
    let gLogits: Int, gPooled: Int, gTokens: Int, gQKV: Int, gHead: Int
    let gA: Int, gB: Int

    init(_ net: NoisyClassifier, batch n: Int, training: Bool) {
        self.training = training
        core = ADMPlan(trunk: net.trunk, batch: n, training: training)
        let ws = core.ws
        size = net.trunk.middle.outSize; channels = net.trunk.finalChannels; pixels = size * size
        classes = net.architecture.outChannels
        let c = channels, t = pixels + 1
        headNorm = GroupNormState(ws, batch: n, channels: c)
        headAct = ws.privateBuffer(n * pixels * c)
        pooled = ws.privateBuffer(n * c)
        if case .attention(let ap) = net.head {
            tokensBuf = ws.privateBuffer(n * t * c)
            qkvBuf = ws.privateBuffer(n * t * 3 * c)
            probs = ws.privateBuffer(n * ap.heads * t)
            positionalT = ws.privateBuffer(t * c)
            let macs: Int = t * c * 3 * c + 2 * t * c + c * classes
            core.flops += 2 * Double(n * macs)
        } else {
            tokensBuf = -1; qkvBuf = -1; probs = -1; positionalT = -1
            let macs: Int = c * classes
            core.flops += 2 * Double(n * macs)
        }
        if training {
            gLogits = ws.privateBuffer(n * classes); gPooled = ws.privateBuffer(n * c)
            gTokens = ws.privateBuffer(n * t * c); gQKV = ws.privateBuffer(n * t * 3 * c)
            gHead = ws.privateBuffer(n * pixels * c)
            var largest = n * net.architecture.inChannels * net.architecture.imageSize * net.architecture.imageSize
            for b in net.trunk.inputBlocks + [net.trunk.middle] {
                largest = max(largest, n * b.size * b.size * max(b.inChannels, b.outChannels))
            }
            gA = ws.privateBuffer(largest); gB = ws.privateBuffer(largest)
        } else { gLogits = -1; gPooled = -1; gTokens = -1; gQKV = -1; gHead = -1; gA = -1; gB = -1 }
        ws.allocate()
        if case .attention(let ap) = net.head {
            // [C, T] -> [T, C]
            for ch in 0..<c { for j in 0..<t { ws[positionalT][j * c + ch] = ap.positional.data[ch * t + j] } }
        }
    }

    func forward(_ net: NoisyClassifier, x: Tensor, timesteps: [Int], logits: Tensor) {
        let n = core.batch, ws = core.ws, c = channels
        ws[core.input].update(from: x.data, count: n * net.architecture.inChannels * net.architecture.imageSize * net.architecture.imageSize)
        core.embed(trunk: net.trunk, timesteps: timesteps, classes: nil)
        core.runForward()
        headNorm.prepare(ws, net.outNorm, ws[core.trunkOutput], batch: n, pixels: pixels)
        headNorm.apply(ws, ws[core.trunkOutput], ws[headAct], batch: n, pixels: pixels, channels: c, silu: true, nhwcOutput: true)
        meanOverPixels(ws[headAct], ws[pooled], batch: n, pixels: pixels, channels: c)
        switch net.head {
        case .adaptive(let conv):
            linearForwardPerItem(ws[pooled], items: n, rowsPerItem: 1, inFeatures: c, outFeatures: classes, weight: conv.weight.data, bias: conv.bias!.data, logits.data)
        case .attention(let ap):
            let t = pixels + 1, hc = c / ap.heads
            let tok = ws[tokensBuf], pos = ws[positionalT]
            for b in 0..<n {
                let rows = tok + b * t * c
                rows.update(from: ws[pooled] + b * c, count: c)
                (rows + c).update(from: ws[headAct] + b * pixels * c, count: pixels * c)
                for i in 0..<(t * c) { rows[i] += pos[i] }
            }
            linearForwardPerItem(tok, items: n, rowsPerItem: t, inFeatures: c, outFeatures: 3 * c, weight: ap.qkv.weight.data, bias: ap.qkv.bias.data, ws[qkvBuf])
            let scale = 1 / Float(hc).squareRoot()
            let attended = ws[pooled]   // reuse: [N, C] token-0 outputs
            for b in 0..<n {
                let rows = ws[qkvBuf] + b * t * 3 * c
                for h in 0..<ap.heads {
                    let q = rows + h * hc, k = rows + c + h * hc, v = rows + 2 * c + h * hc
                    let p = ws[probs] + (b * ap.heads + h) * t
                    for j in 0..<t {
                        var s: Float = 0
                        for d in 0..<hc { s += q[d] * k[j * 3 * c + d] }
                        p[j] = s * scale
                    }
                    softmaxRows(p, rows: 1, cols: t)
                    let out = attended + b * c + h * hc
                    for d in 0..<hc {
                        var s: Float = 0
                        for j in 0..<t { s += p[j] * v[j * 3 * c + d] }
                        out[d] = s
                    }
                }
            }
            linearForwardPerItem(attended, items: n, rowsPerItem: 1, inFeatures: c, outFeatures: classes, weight: ap.proj.weight.data, bias: ap.proj.bias.data, logits.data)
        }
    }

    func backward(_ net: NoisyClassifier, classes y: [Int], logits: Tensor, gradient: Tensor) {
        let n = core.batch, ws = core.ws, c = channels, k = classes
        // d/dlogits of sum_i log_softmax(logits_i)[y_i] = onehot(y) - softmax(logits).
        let dl = ws[gLogits]
        for b in 0..<n {
            let row = logits.data + b * k
            var m = -Float.infinity
            for j in 0..<k { m = max(m, row[j]) }
            var s = 0.0
            for j in 0..<k { s += Foundation.exp(Double(row[j] - m)) }
            for j in 0..<k { dl[b * k + j] = (j == y[b] ? 1 : 0) - Float(Foundation.exp(Double(row[j] - m)) / s) }
        }
        let dh = ws[gHead]
        switch net.head {
        case .adaptive(let conv):
            sgemmPerItem(items: n, rowsPerItem: 1, n: c, k: k, a: dl, lda: k, b: conv.weight.data, ldb: c, c: ws[gPooled], ldc: c)
            let inv = 1 / Float(pixels)
            for b in 0..<n { for p in 0..<pixels { for ch in 0..<c { dh[(b * pixels + p) * c + ch] = ws[gPooled][b * c + ch] * inv } } }
        case .attention(let ap):
            let t = pixels + 1, hc = c / ap.heads
            let scale = 1 / Float(hc).squareRoot()
            let dA = ws[gPooled]
            sgemmPerItem(items: n, rowsPerItem: 1, n: c, k: k, a: dl, lda: k, b: ap.proj.weight.data, ldb: c, c: dA, ldc: c)
            let dqkv = ws[gQKV]
            dqkv.update(repeating: 0, count: n * t * 3 * c)
            for b in 0..<n {
                let rows = ws[qkvBuf] + b * t * 3 * c, drows = dqkv + b * t * 3 * c
                for h in 0..<ap.heads {
                    let qo = h * hc, ko = c + h * hc, vo = 2 * c + h * hc
                    let p = ws[probs] + (b * ap.heads + h) * t
                    let da = dA + b * c + h * hc
                    var dot: Float = 0
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: t) { dpBuf in
                        let dp = dpBuf.baseAddress!
                        for j in 0..<t {
                            var s: Float = 0
                            for d in 0..<hc { s += da[d] * rows[j * 3 * c + vo + d] }
                            dp[j] = s
                            dot += p[j] * s
                            for d in 0..<hc { drows[j * 3 * c + vo + d] = p[j] * da[d] }
                        }
                        for j in 0..<t {
                            let ds = p[j] * (dp[j] - dot) * scale
                            for d in 0..<hc {
                                drows[qo + d] += ds * rows[j * 3 * c + ko + d]
                                drows[j * 3 * c + ko + d] = ds * rows[qo + d]
                            }
                        }
                    }
                }
            }
            let dtok = ws[gTokens]
            sgemmPerItem(items: n, rowsPerItem: t, n: c, k: 3 * c, a: dqkv, lda: 3 * c, b: ap.qkv.weight.data, ldb: c, c: dtok, ldc: c)
            let inv = 1 / Float(pixels)
            for b in 0..<n {
                for p in 0..<pixels {
                    for ch in 0..<c { dh[(b * pixels + p) * c + ch] = dtok[(b * t + 1 + p) * c + ch] + dtok[b * t * c + ch] * inv }
                }
            }
        }
        var current = ws[gA], other = ws[gB]
        nhwcToBlocked(dh, other, batch: n, pixels: pixels, channels: c)
        headNorm.backward(ws, x: ws[core.trunkOutput], dy: other, dx: current, batch: n, pixels: pixels, channels: c, silu: true, accumulate: false)
        let e = core.embedding
        for step in core.steps.reversed() {
            guard case .layer(let r, let i, _) = step else { fatalError("encoders have no concatenations") }
            r.backward(input: ws[i], dOutput: current, dInput: other, e)
            swap(&current, &other)
        }
        let a = net.architecture
        gradient.data.update(from: current, count: n * a.inChannels * a.imageSize * a.imageSize)
    }
}
