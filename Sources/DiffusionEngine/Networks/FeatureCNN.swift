import Foundation

/// The plain CNN of bundles of kind "features" (conv / relu / maxpool / global_avgpool / linear),
/// returning the activations at its `features` marker (the FID embedding) and the logits.
public final class FeatureCNN: @unchecked Sendable {
    /// The layer list the network was built from.
    public let architecture: FeatureCNNArchitecture
    enum Op {
        case conv(ConvParameters, relu: Bool)
        case relu, maxpool(Int), avgpool(Int), globalAvgPool, flatten, features
        case linear(LinearParameters)
    }
    let ops: [Op]
    /// Width of the features and of the logits.
    public let featureCount: Int, logitCount: Int
    /// Input channels (images are square, any size the layers accept).
    public let inChannels: Int
    private var plans: [[Int]: FeaturePlan] = [:]
    private let lock = NSLock()

    /// Builds the network from its layer list and tensors `<name>.weight` / `<name>.bias`.
    public init(architecture a: FeatureCNNArchitecture, weights: [String: Tensor]) throws {
        architecture = a
        let r = WeightReader(weights)
        var ops: [Op] = []
        var flat: Int? = nil, channels: Int? = nil
        var featureWidth: Int? = nil
        var firstChannels: Int? = nil
        let layers = a.layers
        var i = 0
        while i < layers.count {
            let l = layers[i]
            func need(_ v: Int?, _ field: String) throws -> Int {
                guard let v, v > 0 || field == "padding" else { throw EngineError.invalidArchitecture("layer \(i) (\(l.op)) needs '\(field)'") }
                return v
            }
            switch l.op {
            case "conv":
                guard let name = l.name else { throw EngineError.invalidArchitecture("conv layer \(i) has no name") }
                let cin = try need(l.in, "in"), cout = try need(l.out, "out"), k = try need(l.kernel, "kernel")
                if let c = channels, c != cin { throw EngineError.invalidArchitecture("conv \(name) takes \(cin) channels, gets \(c)") }
                if firstChannels == nil { firstChannels = cin }
                let p = try ConvParameters(r, name, in: cin, out: cout, kernel: k, stride: l.stride ?? 1, padding: l.padding ?? 0)
                let fuse = i + 1 < layers.count && layers[i + 1].op == "relu"
                ops.append(.conv(p, relu: fuse))
                if fuse { i += 1 }
                channels = cout
            case "relu": ops.append(.relu)
            case "maxpool": ops.append(.maxpool(try need(l.size, "size")))
            case "avgpool": ops.append(.avgpool(try need(l.size, "size")))
            case "global_avgpool": ops.append(.globalAvgPool); flat = channels
            case "flatten": ops.append(.flatten); flat = nil
            case "features": ops.append(.features); featureWidth = flat
            case "linear":
                guard let name = l.name else { throw EngineError.invalidArchitecture("linear layer \(i) has no name") }
                let fin = try need(l.in, "in"), fout = try need(l.out, "out")
                if let f = flat, f != fin { throw EngineError.invalidArchitecture("linear \(name) takes \(fin) features, gets \(f)") }
                ops.append(.linear(try LinearParameters(r, name, in: fin, out: fout)))
                flat = fout
            default: throw EngineError.invalidArchitecture("unknown layer op '\(l.op)'")
            }
            i += 1
        }
        guard let fw = featureWidth, let out = flat, let c0 = firstChannels else {
            throw EngineError.invalidArchitecture("feature CNN needs a conv first, a features marker after pooling, and a final linear")
        }
        featureCount = fw; logitCount = out; inChannels = c0
        self.ops = ops
        try r.finish()
    }

    /// Features [N, featureCount] and logits [N, logitCount] for images x [N, C, H, W] (NCHW).
    public func forward(_ x: Tensor) throws -> (features: Tensor, logits: Tensor) {
        guard x.shape.count == 4, x.shape[1] == inChannels, x.shape[0] > 0 else {
            throw EngineError.invalidInput("x has shape \(x.shape), expected [N, \(inChannels), H, W]")
        }
        let features = Tensor(shape: [x.shape[0], featureCount]), logits = Tensor(shape: [x.shape[0], logitCount])
        lock.lock(); defer { lock.unlock() }
        ComputeRuntime.prepareCallingThread()
        let key = x.shape
        let plan: FeaturePlan
        if let p = plans[key] { plan = p } else {
            plan = try FeaturePlan(self, batch: x.shape[0], height: x.shape[2], width: x.shape[3])
            plans[key] = plan
        }
        plan.run(self, x: x, features: features, logits: logits)
        return (features, logits)
    }
}

/// The feature CNN's plan for one input shape.
final class FeaturePlan {
    enum Step {
        case conv(ConvolutionPrimitive)
        case relu(count: Int)
        case maxpool(h: Int, w: Int, c: Int, k: Int)
        case avgpool(h: Int, w: Int, c: Int)
        case globalPool(pixels: Int, c: Int)
        case flatten(pixels: Int, c: Int)
        case features(count: Int)
        case linear(LinearParameters)
    }
    let batch: Int
    let ws = Workspace(keepIntermediates: false)
    let scratch = ScratchArena()
    var steps: [Step] = []
    let bufA: Int, bufB: Int

    init(_ net: FeatureCNN, batch n: Int, height: Int, width: Int) throws {
        batch = n
        var h = height, w = width, c = net.inChannels, flat: Int? = nil
        var largest = n * h * w * c
        for op in net.ops {
            switch op {
            case .conv(let p, let relu):
                guard flat == nil, h == w else { throw EngineError.invalidInput("conv on a flat or non-square activation") }
                let prim = ConvolutionPrimitive(batch: n, inChannels: p.inChannels, outChannels: p.outChannels, height: h, width: w,
                                                kernel: p.kernel, stride: p.stride, padding: p.padding, weights: p.weight.data,
                                                bias: p.bias?.data, inputLayout: .nhwc, outputLayout: .nhwc, relu: relu, scratch: scratch)
                steps.append(.conv(prim))
                h = prim.outHeight; w = prim.outWidth; c = p.outChannels
            case .relu: steps.append(.relu(count: n * (flat ?? h * w * c)))
            case .maxpool(let k): steps.append(.maxpool(h: h, w: w, c: c, k: k)); h /= k; w /= k
            case .avgpool(let k):
                guard k == 2 else { throw EngineError.invalidArchitecture("avgpool size \(k) (only 2)") }
                steps.append(.avgpool(h: h, w: w, c: c)); h /= 2; w /= 2
            case .globalAvgPool: steps.append(.globalPool(pixels: h * w, c: c)); flat = c
            case .flatten: steps.append(.flatten(pixels: h * w, c: c)); flat = h * w * c
            case .features: steps.append(.features(count: flat ?? h * w * c))
            case .linear(let p): steps.append(.linear(p)); flat = p.outFeatures
            }
            largest = max(largest, n * (flat ?? h * w * c))
        }
        bufA = ws.privateBuffer(largest); bufB = ws.privateBuffer(largest)
        ws.allocate()
    }

    func run(_ net: FeatureCNN, x: Tensor, features: Tensor, logits: Tensor) {
        let n = batch
        var cur = ws[bufA], other = ws[bufB]
        nchwToNhwc(x.data, cur, batch: n, channels: x.shape[1], pixels: x.shape[2] * x.shape[3])
        for step in steps {
            switch step {
            case .conv(let p): p(cur, other); swap(&cur, &other)
            case .relu(let count): reluKernel(cur, cur, count: count)
            case .maxpool(let h, let w, let c, let k): maxPool(cur, other, batch: n, height: h, width: w, channels: c, size: k); swap(&cur, &other)
            case .avgpool(let h, let w, let c): avgPool2x2(cur, other, batch: n, height: h, width: w, channels: c); swap(&cur, &other)
            case .globalPool(let pixels, let c): meanOverPixels(cur, other, batch: n, pixels: pixels, channels: c); swap(&cur, &other)
            case .flatten(let pixels, let c): nhwcToNchw(cur, other, batch: n, channels: c, pixels: pixels); swap(&cur, &other)
            case .features(let count): features.data.update(from: cur, count: n * count)
            case .linear(let p):
                linearForwardPerItem(cur, items: n, rowsPerItem: 1, inFeatures: p.inFeatures, outFeatures: p.outFeatures, weight: p.weight.data, bias: p.bias.data, other)
                swap(&cur, &other)
            }
        }
        logits.data.update(from: cur, count: n * net.logitCount)
    }
}
