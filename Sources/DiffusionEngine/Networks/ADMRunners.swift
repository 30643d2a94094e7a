/// Per-batch-size executors of the ADM building blocks over activations in oneDNN's 16-channel
/// blocked layout (nChw16c). Every buffer
/// and oneDNN primitive is created when the plan is built; forward and backward only run kernels.

/// A layer of a plan: maps one activation buffer to another (and back, for gradients).
protocol LayerRunner: AnyObject {
    /// Output = layer(input); `output` may equal `input` only for layers that allow it.
    func forward(_ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext)
    /// dInput = J^T dOutput, given the forward input (plans built with saved intermediates only).
    func backward(input: UnsafeMutablePointer<Float>, dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext)
    /// Multiply-add FLOPs x 2 of one forward call.
    var flops: Double { get }
}

/// Statistics and folded coefficients of one GroupNorm application.
struct GroupNormState {
    let mean: Int, rstd: Int, a: Int, b: Int, gamma: Int, scratch: Int

    init(_ ws: Workspace, batch: Int, channels: Int) {
        mean = ws.privateBuffer(batch * 32); rstd = ws.privateBuffer(batch * 32)
        scratch = ws.buffer("groupnorm.scratch", ComputeRuntime.dnnlThreads * 5 * channels)
        a = ws.privateBuffer(batch * channels); b = ws.privateBuffer(batch * channels); gamma = ws.privateBuffer(batch * channels)
    }

    /// Computes statistics of `x` (+ addend) and the coefficients of act(GN * (1 + scale) + shift).
    func prepare(_ ws: Workspace, _ p: GroupNormParameters, _ x: UnsafePointer<Float>, batch: Int, pixels: Int,
                 addend: UnsafePointer<Float>? = nil, scale: UnsafePointer<Float>? = nil, shift: UnsafePointer<Float>? = nil, stride: Int = 0,
                 layout: ActivationLayout = .blocked16) {
        groupNormStatistics(x, batch: batch, pixels: pixels, channels: p.channels, groups: 32,
                            addend: addend, addendStride: stride, mean: ws[mean], rstd: ws[rstd], layout: layout)
        groupNormCoefficients(batch: batch, channels: p.channels, groups: 32, mean: ws[mean], rstd: ws[rstd],
                              gamma: p.gamma.data, beta: p.beta.data, addend: addend, addendStride: stride,
                              scale: scale, shift: shift, scaleStride: stride, a: ws[a], b: ws[b], effectiveGamma: ws[gamma])
    }

    /// y = act(x * a + b); with `prefetching` the pass also brings that convolution's weights
    /// towards the core, for the convolution that follows (on `y`, or on `y` resampled).
    func apply(_ ws: Workspace, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, pixels: Int, channels: Int, silu: Bool,
               nhwcOutput: Bool = false, prefetching next: ConvolutionPrimitive? = nil) {
        affineActivation(x, y, batch: batch, pixels: pixels, channels: channels, a: ws[a], b: ws[b], silu: silu, nhwcOutput: nhwcOutput,
                         prefetch: next?.weightBytes)
    }

    /// `apply` followed by `conv` on its result (the pass prefetching the convolution's weights):
    /// under bf16 the activation is written in bfloat16 into `y` (half its bytes), in the layout
    /// the convolution reads, for it to read as it is. `x` is blocked, or channels-last with
    /// `layout` nhwc (bf16 convolutions only). An accumulating `conv` adds `residual` where given.
    func apply(_ ws: Workspace, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, pixels: Int, channels: Int, silu: Bool,
               layout: ActivationLayout = .blocked16, thenConvolve conv: ConvolutionPrimitive, into output: UnsafeMutablePointer<Float>,
               adding residual: UnsafePointer<Float>? = nil) {
        ensure(layout == .blocked16 || conv.takesBFloat16, "only bf16 convolutions follow a channels-last GroupNorm")
        if conv.takesBFloat16 {
            let half = UnsafeMutableRawPointer(y).assumingMemoryBound(to: UInt16.self)
            affineActivationBFloat16(x, half, batch: batch, pixels: pixels, channels: channels, a: ws[a], b: ws[b], silu: silu,
                                     nhwcOutput: conv.bfloat16InputLayout == .nhwc, inputLayout: layout, prefetch: conv.weightBytes)
            if let residual { copyKernel(residual, output, count: conv.outputCount) }
            conv(bfloat16: half, output)
        } else {
            apply(ws, x, y, batch: batch, pixels: pixels, channels: channels, silu: silu, prefetching: conv)
            if let residual { conv(y, output, adding: residual) } else { conv(y, output) }
        }
    }

    func backward(_ ws: Workspace, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                  batch: Int, pixels: Int, channels: Int, addend: UnsafePointer<Float>? = nil, stride: Int = 0, silu: Bool, accumulate: Bool) {
        groupNormBackward(x: x, dy: dy, dx: dx, batch: batch, pixels: pixels, channels: channels, groups: 32,
                          a: ws[a], b: ws[b], effectiveGamma: ws[gamma], mean: ws[mean], rstd: ws[rstd],
                          addend: addend, addendStride: stride, silu: silu, accumulate: accumulate, scratch: ws[scratch])
    }
}

/// A plain convolution layer (optionally accumulating into its output).
final class ConvRunner: LayerRunner {
    let forwardPrimitive: ConvolutionPrimitive
    let backwardPrimitive: ConvolutionPrimitive?
    /// For plain-layout inputs the gradient is computed in zero-padded 16-channel blocks (oneDNN
    /// has only a reference kernel for plain layouts with few channels) and unpacked.
    private let unpack: (ws: Workspace, buffer: Int)?
    private let batch: Int, channels: Int, pixels: Int

    init(_ p: ConvParameters, batch: Int, size: Int, scratch: ScratchArena, training: Bool,
         inputLayout: ActivationLayout = .blocked16, outputLayout: ActivationLayout = .blocked16, accumulate: Bool = false, relu: Bool = false,
         ws: Workspace? = nil, precision: ComputePrecision = .fp32) {
        self.batch = batch; channels = p.inChannels; pixels = size * size
        forwardPrimitive = ConvolutionPrimitive(batch: batch, inChannels: p.inChannels, outChannels: p.outChannels, height: size, width: size,
                                                kernel: p.kernel, stride: p.stride, padding: p.padding, weights: p.weight.data, bias: p.bias?.data,
                                                inputLayout: inputLayout, outputLayout: outputLayout, accumulate: accumulate, relu: relu,
                                                precision: precision, scratch: scratch)
        let padded = training && inputLayout == .nchw && ws != nil
        backwardPrimitive = training ? ConvolutionPrimitive(batch: batch, inChannels: p.inChannels, outChannels: p.outChannels, height: size, width: size,
                                                            kernel: p.kernel, stride: p.stride, padding: p.padding, weights: p.weight.data, bias: nil,
                                                            inputLayout: padded ? .blocked16 : inputLayout, outputLayout: outputLayout,
                                                            backwardData: true, scratch: scratch) : nil
        unpack = padded ? (ws!, ws!.buffer("conv.unpack", batch * (p.inChannels + 15) / 16 * 16 * size * size)) : nil
    }

    func forward(_ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        forwardPrimitive(input, output)
    }

    func backward(input: UnsafeMutablePointer<Float>, dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        guard let unpack else { backwardPrimitive!(dOutput, dInput); return }
        let blocked = unpack.ws[unpack.buffer], blocks = (channels + 15) / 16
        backwardPrimitive!(dOutput, blocked)
        for n in 0..<batch {
            for c in 0..<channels {
                let plane = blocked + (n * blocks + c / 16) * pixels * 16 + c % 16
                let row = dInput + (n * channels + c) * pixels
                for q in 0..<pixels { row[q] = plane[q * 16] }
            }
        }
    }

    var flops: Double { forwardPrimitive.flops }
}

/// Nearest 2x upsampling followed by an optional 3x3 convolution (guided-diffusion Upsample).
final class UpsampleRunner: LayerRunner {
    let conv: ConvRunner?
    let ws: Workspace
    let temp: Int
    let batch: Int, size: Int, channels: Int

    init(_ p: ConvParameters?, channels: Int, batch: Int, size: Int, ws: Workspace, scratch: ScratchArena, precision: ComputePrecision) {
        self.ws = ws; self.batch = batch; self.size = size; self.channels = channels
        conv = p.map { ConvRunner($0, batch: batch, size: 2 * size, scratch: scratch, training: false, precision: precision) }
        temp = ws.buffer("upsample", batch * 4 * size * size * channels)
    }

    func forward(_ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        if let conv {
            upsampleNearest2x(input, ws[temp], batch: batch * channels / 16, height: size, width: size, channels: 16)
            conv.forward(ws[temp], output, emb)
        } else {
            upsampleNearest2x(input, output, batch: batch * channels / 16, height: size, width: size, channels: 16)
        }
    }

    func backward(input: UnsafeMutablePointer<Float>, dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        fatalError("upsampling has no backward pass in the engine (encoders only downsample)")
    }

    var flops: Double { conv?.flops ?? 0 }
}

/// 2x2 average pooling (guided-diffusion Downsample without conv).
final class AvgPoolRunner: LayerRunner {
    let batch: Int, size: Int, channels: Int

    init(channels: Int, batch: Int, size: Int) { self.batch = batch; self.size = size; self.channels = channels }

    func forward(_ input: UnsafeMutablePointer<Float>, _ output: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        avgPool2x2(input, output, batch: batch * channels / 16, height: size, width: size, channels: 16)
    }

    func backward(input: UnsafeMutablePointer<Float>, dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        avgPool2x2Backward(dOutput, dInput, batch: batch * channels / 16, height: size, width: size, channels: 16, accumulate: false)
    }

    var flops: Double { 0 }
}

/// A ResBlock: GN-SiLU-conv, timestep conditioning (added or AdaGN scale/shift), GN-SiLU-conv,
/// plus the skip path; optional nearest-up / average-down resampling of both paths. Input and
/// output are blocked; where bf16 convolutions compute channels-last (AMX) the block keeps its
/// float32 intermediates channels-last too (the convolutions' own layout: no reorder between
/// them) and turns the sum of both paths into blocks once, at the end.
final class ResBlockRunner: LayerRunner {
    let p: ResBlockParameters
    let ws: Workspace
    let batch: Int, size: Int, outSize: Int
    let conv1: ConvolutionPrimitive, conv2: ConvolutionPrimitive, skip: ConvolutionPrimitive?
    let conv1Back: ConvolutionPrimitive?, conv2Back: ConvolutionPrimitive?, skipBack: ConvolutionPrimitive?
    let norm1: GroupNormState, norm2: GroupNormState
    let t1a: Int, t1: Int, xs: Int, h1: Int, t2: Int
    /// Channels-last intermediates: h1 and the sum of both paths are nhwc (-1 where blocked).
    let channelsLast: Bool, sum: Int
    let gT2: Int, gH1: Int, gT1: Int, gT1a: Int, gXs: Int

    /// `channelsLast` nil: channels-last intermediates exactly where the bf16 convolutions compute channels-last.
    init(_ p: ResBlockParameters, batch: Int, size: Int, ws: Workspace, scratch: ScratchArena, training: Bool,
         precision: ComputePrecision = .fp32, channelsLast: Bool? = nil) {
        ensure(!(training && p.up), "up ResBlocks have no backward pass")
        self.p = p; self.ws = ws; self.batch = batch; self.size = size
        let os = p.up ? 2 * size : p.down ? size / 2 : size
        outSize = os
        let n = batch, i = p.inChannels, o = p.outChannels
        let inPix = size * size, outPix = os * os
        let nhwc = !training && precision == .bf16 && (channelsLast ?? precision.computesChannelsLast())
        self.channelsLast = nhwc
        func conv(_ c: ConvParameters, accumulate: Bool = false, back: Bool = false) -> ConvolutionPrimitive {
            ConvolutionPrimitive(batch: n, inChannels: c.inChannels, outChannels: c.outChannels, height: os, width: os,
                                 kernel: c.kernel, padding: c.padding, weights: c.weight.data, bias: back ? nil : c.bias?.data,
                                 outputLayout: nhwc && !back ? .nhwc : .blocked16,
                                 accumulate: accumulate, backwardData: back, precision: precision, scratch: scratch)
        }
        conv1 = conv(p.conv1)
        conv2 = conv(p.conv2, accumulate: !nhwc || p.skip != nil)
        skip = p.skip.map { conv($0) }
        conv1Back = training ? conv(p.conv1, back: true) : nil
        conv2Back = training ? conv(p.conv2, back: true) : nil
        skipBack = training ? p.skip.map { conv($0, back: true) } : nil
        norm1 = GroupNormState(ws, batch: n, channels: i)
        norm2 = GroupNormState(ws, batch: n, channels: o)
        let updown = p.up || p.down
        t1a = updown ? ws.buffer("res.t1a", n * inPix * i) : -1
        t1 = ws.buffer("res.t1", n * outPix * i)
        xs = updown && p.skip != nil ? ws.buffer("res.xs", n * outPix * i) : -1
        h1 = ws.buffer("res.h1", n * outPix * o, keep: true)
        t2 = ws.buffer("res.t2", n * outPix * o)
        sum = nhwc ? ws.buffer("res.sum", n * outPix * o) : -1
        if training {
            gT2 = ws.buffer("grad.t2", n * outPix * o); gH1 = ws.buffer("grad.h1", n * outPix * o)
            gT1 = ws.buffer("grad.t1", n * outPix * i); gT1a = updown ? ws.buffer("grad.t1a", n * inPix * i) : -1
            gXs = p.skip != nil ? ws.buffer("grad.xs", n * outPix * i) : -1
        } else { gT2 = -1; gH1 = -1; gT1 = -1; gT1a = -1; gXs = -1 }
    }

    var flops: Double { conv1.flops + conv2.flops + (skip?.flops ?? 0) }

    private func resample(_ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, channels: Int) {
        if p.up { upsampleNearest2x(x, y, batch: batch * channels / 16, height: size, width: size, channels: 16) }
        else { avgPool2x2(x, y, batch: batch * channels / 16, height: size, width: size, channels: 16) }
    }

    func forward(_ x: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        let n = batch, i = p.inChannels, o = p.outChannels
        let inPix = size * size, outPix = outSize * outSize
        norm1.prepare(ws, p.norm1, x, batch: n, pixels: inPix)
        if p.up || p.down {
            norm1.apply(ws, x, ws[t1a], batch: n, pixels: inPix, channels: i, silu: true, prefetching: conv1)
            resample(ws[t1a], ws[t1], channels: i)
            conv1(ws[t1], ws[h1])
        } else {
            norm1.apply(ws, x, ws[t1], batch: n, pixels: inPix, channels: i, silu: true, thenConvolve: conv1, into: ws[h1])
        }
        let e = emb.values + p.embOffset
        let h1Layout: ActivationLayout = channelsLast ? .nhwc : .blocked16
        if p.scaleShift {
            norm2.prepare(ws, p.norm2, ws[h1], batch: n, pixels: outPix, scale: e, shift: e + o, stride: emb.stride, layout: h1Layout)
        } else {
            norm2.prepare(ws, p.norm2, ws[h1], batch: n, pixels: outPix, addend: e, stride: emb.stride, layout: h1Layout)
        }
        if channelsLast { forwardChannelsLast(x, out); return }
        // The skip path first: conv2 adds onto it (onto x itself for the identity).
        var identity: UnsafePointer<Float>? = nil
        if let skip {
            if p.up || p.down { resample(x, ws[xs], channels: i); skip(ws[xs], out) } else { skip(x, out) }
        } else if p.up || p.down {
            resample(x, out, channels: i)
        } else {
            identity = UnsafePointer(x)
        }
        norm2.apply(ws, ws[h1], ws[t2], batch: n, pixels: outPix, channels: o, silu: true, thenConvolve: conv2, into: out, adding: identity)
    }

    /// The rest of `forward` with channels-last intermediates: a skip convolution writes the nhwc
    /// sum that conv2 adds onto, or conv2 writes it alone and the identity path is added as the
    /// sum turns into blocks.
    private func forwardChannelsLast(_ x: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>) {
        let n = batch, i = p.inChannels, o = p.outChannels, outPix = outSize * outSize
        if let skip {
            if p.up || p.down { resample(x, ws[xs], channels: i); skip(ws[xs], ws[sum]) } else { skip(x, ws[sum]) }
        }
        norm2.apply(ws, ws[h1], ws[t2], batch: n, pixels: outPix, channels: o, silu: true, layout: .nhwc, thenConvolve: conv2, into: ws[sum])
        var identity: UnsafePointer<Float>? = nil
        if skip == nil {
            if p.up || p.down { resample(x, out, channels: i); identity = UnsafePointer(out) } else { identity = UnsafePointer(x) }
        }
        nhwcToBlocked(ws[sum], out, adding: identity, batch: n, pixels: outPix, channels: o)
    }

    func backward(input x: UnsafeMutablePointer<Float>, dOutput: UnsafeMutablePointer<Float>, dInput dx: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        let n = batch, i = p.inChannels, o = p.outChannels
        let inPix = size * size, outPix = outSize * outSize
        conv2Back!(dOutput, ws[gT2])
        let e = emb.values + p.embOffset
        norm2.backward(ws, x: ws[h1], dy: ws[gT2], dx: ws[gH1], batch: n, pixels: outPix, channels: o,
                       addend: p.scaleShift ? nil : e, stride: emb.stride, silu: true, accumulate: false)
        conv1Back!(ws[gH1], ws[gT1])
        var dt1 = ws[gT1]
        if p.down {
            avgPool2x2Backward(ws[gT1], ws[gT1a], batch: n * i / 16, height: size, width: size, channels: 16, accumulate: false)
            dt1 = ws[gT1a]
        }
        norm1.backward(ws, x: x, dy: dt1, dx: dx, batch: n, pixels: inPix, channels: i, silu: true, accumulate: false)
        var dxs = dOutput
        if let skipBack { skipBack(dOutput, ws[gXs]); dxs = ws[gXs] }
        if p.down {
            avgPool2x2Backward(dxs, dx, batch: n * i / 16, height: size, width: size, channels: 16, accumulate: true)
        } else {
            addKernel(dxs, into: dx, count: n * inPix * i)
        }
    }
}
