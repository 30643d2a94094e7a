import Foundation

import Synchronization

/// guided-diffusion's UNetModel (ADM): predicts noise (and variance) for x_t at timestep t.
///
/// A batch of a multiple of `laneRows` images runs as `laneRows`-image pieces, each on one thread
/// with kernels built for one thread, the cores taking pieces until none is left: every image is
/// then computed by the same single-threaded code whatever its batch and the core count, and the
/// cores meet once per evaluation instead of once per kernel. Other batch sizes run as one call
/// with every kernel multi-threaded. Evaluation plans (buffers, oneDNN primitives) are built on
/// first use and reused; one evaluation runs at a time (calls are serialised by a lock).
public final class ADMUNet: @unchecked Sendable {
    /// Images per single-threaded piece of a batch (the fastest per core on the CPUs measured).
    public static let laneRows = 8
    /// The architecture the network was built from.
    public let architecture: ADMArchitecture
    let trunk: ADMTrunk
    let outNorm: GroupNormParameters
    let outConv: ConvParameters
    /// The Extended-Analytic-DPM covariance head (`out2`), when built with one.
    let head: (kind: CovarianceHeadKind, norm: GroupNormParameters, conv: ConvParameters)?
    /// The format the convolutions compute in.
    public let precision: ComputePrecision
    private var plans: [Int: UNetPlan] = [:]
    /// One single-threaded `laneRows` plan per lane.
    private var lanePlans: [UNetPlan] = []
    /// The convolutions' reordered weights, one copy per layout for all plans (the lanes' plans
    /// all have the same layouts).
    private var reorderedWeights = ConvolutionWeightCache()
    private let lock = NSLock()

    /// Builds the network from its architecture and state-dict tensors (keys as in guided-diffusion).
    /// Throws on missing keys, unexpected keys or wrong shapes.
    public init(architecture a: ADMArchitecture, weights: [String: Tensor]) throws {
        guard a.type == "adm-unet" else { throw EngineError.invalidArchitecture("expected type adm-unet, got \(a.type)") }
        architecture = a
        (trunk, outNorm, outConv) = try ADMUNet.readWeights(a, WeightReader(weights))
        head = nil
        precision = .fp32
    }

    /// The same network (its weights and head shared) computing its convolutions in `precision`.
    /// Throws when this CPU cannot run the precision (see `ComputePrecision.unsupportedReason`).
    public init(_ base: ADMUNet, precision: ComputePrecision, features: CPUFeatures = .current) throws {
        if let why = precision.unsupportedReason(on: features) { throw EngineError.invalidInput(why) }
        architecture = base.architecture
        trunk = base.trunk
        outNorm = base.outNorm
        outConv = base.outConv
        head = base.head
        self.precision = precision
    }

    /// The same network (its weights shared) with an SN-DPM or NPR-DPM covariance head reading the
    /// final feature map beside `out`: GroupNorm -> SiLU -> 3x3 conv to the image channels, keys
    /// `out2.0.{weight,bias}` and `out2.2.{weight,bias}` (the authors' "simple" head). The output then
    /// has `outputChannels` = out + in channels, the head's raw values last, from the same forward pass.
    /// Throws on missing, unexpected or misshapen keys.
    public init(_ base: ADMUNet, covarianceHead kind: CovarianceHeadKind, weights: [String: Tensor]) throws {
        architecture = base.architecture
        trunk = base.trunk
        outNorm = base.outNorm
        outConv = base.outConv
        let r = WeightReader(weights)
        let norm = try GroupNormParameters(r, "out2.0", channels: base.trunk.finalChannels)
        let conv = try ConvParameters(r, "out2.2", in: base.trunk.finalChannels, out: base.architecture.inChannels, kernel: 3, padding: 1)
        try r.finish()
        head = (kind, norm, conv)
        precision = base.precision
    }

    /// The covariance head's kind, nil without one.
    public var covarianceHead: CovarianceHeadKind? { head?.kind }

    /// Channels of the output: `architecture.outChannels`, plus the image channels with a covariance head.
    public var outputChannels: Int { architecture.outChannels + (head == nil ? 0 : architecture.inChannels) }

    @discardableResult
    static func readWeights(_ a: ADMArchitecture, _ r: WeightReader) throws -> (ADMTrunk, GroupNormParameters, ConvParameters) {
        let trunk = try ADMTrunk(a, r, withOutputBlocks: true)
        let norm = try GroupNormParameters(r, "out.0", channels: trunk.finalChannels)
        let conv = try ConvParameters(r, "out.2", in: trunk.finalChannels, out: a.outChannels, kernel: 3, padding: 1)
        try r.finish()
        return (trunk, norm, conv)
    }

    /// Image side length the network was built for.
    public var imageSize: Int { architecture.imageSize }

    /// Multiply-adds x 2 of one forward pass per image (convolutions, linears, attention products).
    public var flopsPerImage: Double {
        lock.lock(); defer { lock.unlock() }
        return plan(batch: 1).flops
    }

    private func plan(batch: Int) -> UNetPlan {
        if let p = plans[batch] { return p }
        ComputeRuntime.prepareCallingThread()
        let p = UNetPlan(self, batch: batch, sharedWeights: reorderedWeights)
        plans[batch] = p
        return p
    }

    /// Drops the cached evaluation plans (their buffers and primitives).
    public func releasePlans() { lock.lock(); plans.removeAll(); lanePlans.removeAll(); reorderedWeights = ConvolutionWeightCache(); lock.unlock() }

    /// Evaluates `n` (a multiple of `laneRows`) images piece by piece on single-threaded lanes.
    private func runInLanes(n: Int, x: UnsafePointer<Float>, timesteps: [Int], classes: [Int]?, output: UnsafeMutablePointer<Float>) {
        let pieces = n / Self.laneRows
        let lanes = min(ComputeRuntime.dnnlThreads, pieces)
        while lanePlans.count < lanes {
            lanePlans.append(ComputeRuntime.singleThreaded { UNetPlan(self, batch: Self.laneRows, sharedWeights: reorderedWeights) })
        }
        let a = architecture, pixels = a.imageSize * a.imageSize
        let inStride = Self.laneRows * a.inChannels * pixels, outStride = Self.laneRows * outputChannels * pixels
        let next = Atomic<Int>(0)
        let plans = lanePlans
        ComputeRuntime.inSingleThreadedLanes(lanes) { lane in
            while true {
                let piece = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard piece < pieces else { return }
                let rows = piece * Self.laneRows ..< (piece + 1) * Self.laneRows
                plans[lane].run(self, x: x + piece * inStride, timesteps: Array(timesteps[rows]),
                                classes: classes.map { Array($0[rows]) }, output: output + piece * outStride)
            }
        }
    }

    /// Evaluates the network: x [N, in, H, W] NCHW, timesteps [N] (original indices), classes [N]
    /// (nil when unconditional) -> a new [N, out, H, W] tensor.
    public func forward(_ x: Tensor, timesteps: [Int], classes: [Int]? = nil) throws -> Tensor {
        let out = Tensor(shape: [x.shape.first ?? 0, outputChannels, imageSize, imageSize])
        try forward(x, timesteps: timesteps, classes: classes, into: out)
        return out
    }

    /// Evaluates the network into a preallocated output [N, out, H, W] (no allocation after the
    /// first call at this batch size).
    public func forward(_ x: Tensor, timesteps: [Int], classes: [Int]? = nil, into output: Tensor) throws {
        let a = architecture
        guard x.shape.count == 4, x.shape[1] == a.inChannels, x.shape[2] == a.imageSize, x.shape[3] == a.imageSize else {
            throw EngineError.invalidInput("x has shape \(x.shape), expected [N, \(a.inChannels), \(a.imageSize), \(a.imageSize)]")
        }
        let n = x.shape[0]
        guard n > 0, timesteps.count == n else { throw EngineError.invalidInput("\(timesteps.count) timesteps for batch \(n)") }
        guard output.shape == [n, outputChannels, a.imageSize, a.imageSize] else {
            throw EngineError.invalidInput("output has shape \(output.shape), expected [\(n), \(outputChannels), \(a.imageSize), \(a.imageSize)]")
        }
        if let k = a.numClasses {
            guard let classes, classes.count == n, classes.allSatisfy({ $0 >= 0 && $0 < k }) else {
                throw EngineError.invalidInput("a class-conditional UNet needs \(n) classes in 0..<\(k)")
            }
        }
        lock.lock(); defer { lock.unlock() }
        ComputeRuntime.prepareCallingThread()
        if n % Self.laneRows == 0 {
            runInLanes(n: n, x: x.data, timesteps: timesteps, classes: classes, output: output.data)
        } else {
            plan(batch: n).run(self, x: x.data, timesteps: timesteps, classes: classes, output: output.data)
        }
    }
}

/// The UNet's plan for one batch size: the shared trunk plan plus the output head.
final class UNetPlan {
    /// A 3x3 output layer: in float32 with a few output channels straight into the output's planes
    /// (`FewChannelConvolution`), otherwise a oneDNN convolution into 16-channel blocks (oneDNN has
    /// only a reference kernel for a few channels in plain layouts), unpacked after.
    enum OutputLayer {
        case planes(FewChannelConvolution)
        case blocks(ConvolutionPrimitive, buffer: Int)

        init(_ p: ConvParameters, batch: Int, size: Int, precision: ComputePrecision, ws: Workspace, scratch: ScratchArena) {
            if precision == .fp32 && FewChannelConvolution.serves(inChannels: p.inChannels, outChannels: p.outChannels, kernel: p.kernel,
                                                                       stride: p.stride, padding: p.padding) {
                self = .planes(FewChannelConvolution(inChannels: p.inChannels, outChannels: p.outChannels, height: size, width: size,
                                                     weights: p.weight.data, bias: p.bias?.data))
            } else {
                let conv = ConvolutionPrimitive(batch: batch, inChannels: p.inChannels, outChannels: p.outChannels, height: size, width: size,
                                                kernel: 3, padding: 1, weights: p.weight.data, bias: p.bias?.data,
                                                inputLayout: .blocked16, outputLayout: .blocked16, precision: precision, scratch: scratch)
                self = .blocks(conv, buffer: ws.privateBuffer(batch * ((p.outChannels + 15) / 16) * 16 * size * size))
            }
        }

        func flops(batch: Int) -> Double {
            switch self {
            case .planes(let conv): Double(batch) * conv.flopsPerImage
            case .blocks(let conv, _): conv.flops
            }
        }
    }

    let core: ADMPlan
    let headNorm: GroupNormState
    let headInput: Int
    let output: OutputLayer
    let headOutput: OutputLayer?
    let size: Int, channels: Int

    init(_ net: ADMUNet, batch: Int, sharedWeights: ConvolutionWeightCache? = nil) {
        core = ADMPlan(trunk: net.trunk, batch: batch, training: false, precision: net.precision, sharedWeights: sharedWeights)
        size = net.architecture.imageSize
        channels = net.trunk.finalChannels
        headNorm = GroupNormState(core.ws, batch: batch, channels: channels)
        headInput = core.ws.buffer("head", batch * size * size * channels)
        output = OutputLayer(net.outConv, batch: batch, size: size, precision: net.precision, ws: core.ws, scratch: core.scratch)
        let (ws, scratch, imageSize) = (core.ws, core.scratch, size)
        headOutput = net.head.map { OutputLayer($0.conv, batch: batch, size: imageSize, precision: net.precision, ws: ws, scratch: scratch) }
        core.flops += output.flops(batch: batch) + (headOutput?.flops(batch: batch) ?? 0)
        core.ws.allocate()
    }

    var flops: Double { core.flops / Double(core.batch) }

    /// Evaluates `core.batch` images: x [batch, in, H, W] NCHW into output [batch, out, H, W].
    func run(_ net: ADMUNet, x: UnsafePointer<Float>, timesteps: [Int], classes: [Int]?, output: UnsafeMutablePointer<Float>) {
        let n = core.batch, ws = core.ws
        let c = net.architecture.inChannels, pixels = size * size
        ws[core.input].update(from: x, count: n * c * pixels)
        core.embed(trunk: net.trunk, timesteps: timesteps, classes: classes)
        core.runForward()
        let total = net.outputChannels
        evaluate(self.output, norm: net.outNorm, into: output, channelOffset: 0, totalChannels: total)
        if let head = net.head, let headOutput {
            // The same final feature map through the head's own GroupNorm, SiLU and conv.
            evaluate(headOutput, norm: head.norm, into: output, channelOffset: net.architecture.outChannels, totalChannels: total)
        }
    }

    /// GroupNorm, SiLU and `layer` on the trunk's output, into channels [channelOffset, ...) of the NCHW output.
    private func evaluate(_ layer: OutputLayer, norm: GroupNormParameters, into output: UnsafeMutablePointer<Float>, channelOffset: Int, totalChannels: Int) {
        let n = core.batch, ws = core.ws, pixels = size * size
        headNorm.prepare(ws, norm, ws[core.trunkOutput], batch: n, pixels: pixels)
        switch layer {
        case .planes(let conv):
            headNorm.apply(ws, ws[core.trunkOutput], ws[headInput], batch: n, pixels: pixels, channels: channels, silu: true)
            conv(ws[headInput], batch: n, into: output, channelOffset: channelOffset, totalChannels: totalChannels)
        case .blocks(let conv, let buffer):
            headNorm.apply(ws, ws[core.trunkOutput], ws[headInput], batch: n, pixels: pixels, channels: channels, silu: true,
                           thenConvolve: conv, into: ws[buffer])
            Self.unpack(ws[buffer], channels: conv.outChannels, into: output, channelOffset: channelOffset,
                        totalChannels: totalChannels, batch: n, pixels: pixels)
        }
    }

    /// Copies 16-channel blocks into NCHW channels [offset, offset + channels) of a [n, total, H, W] tensor.
    static func unpack(_ src: UnsafeMutablePointer<Float>, channels oc: Int, into dst: UnsafeMutablePointer<Float>,
                       channelOffset: Int, totalChannels: Int, batch n: Int, pixels: Int) {
        let blocks = (oc + 15) / 16
        for b in 0..<n {
            for c in 0..<oc {
                let plane = src + ((b * blocks + c / 16) * pixels) * 16 + c % 16
                let row = dst + (b * totalChannels + channelOffset + c) * pixels
                for p in 0..<pixels { row[p] = plane[p * 16] }
            }
        }
    }
}
