import CDNNL

/// One 2-D convolution (forward, optionally accumulating into dst, or backward-data) for a fixed
/// batch size and geometry, with weights reordered once into the kernel's layout: oneDNN's, or the
/// engine's own Winograd kernel (`WinogradConvolution`) for fp32 3x3 convolutions where it applies.
final class ConvolutionPrimitive {
    let batch: Int, inChannels: Int, outChannels: Int
    let height: Int, width: Int, kernel: Int, stride: Int, padding: Int
    let outHeight: Int, outWidth: Int
    let backwardData: Bool
    /// Whether a forward call adds its result onto the output's values (or onto a residual).
    let accumulate: Bool
    /// The format the convolution computes in (bf16 only for forward calls on blocked inputs).
    let precision: ComputePrecision
    /// Whether a Winograd algorithm (the engine's or oneDNN's) runs this convolution.
    private(set) var usesWinograd = false
    /// The kernel's name: the engine's `WinogradConvolution.implementation`, or oneDNN's choice
    /// (e.g. "jit_wino_4x3:avx512_core", "jit_bf16:avx512_core_bf16").
    private(set) var implementation = ""
    /// The engine's own Winograd kernel, where it runs this convolution instead of oneDNN.
    private var engineKernel: WinogradConvolution?
    /// Under bf16: the input rounded from float32 into bfloat16 (in `bfloat16InputLayout`) before each call.
    private var inputConversion: LayoutReorder?
    /// Where the bf16 kernel reads its input: the caller's blocked layout, or nhwc for AMX kernels.
    private(set) var bfloat16InputLayout = ActivationLayout.blocked16
    /// When the kernel writes another layout than the caller's (AMX's nhwc, or blocked for an nhwc
    /// caller): its float32 result reordered (or, with `accumulate`, added) into the caller's after each call.
    private var outputReorder: LayoutReorder?
    private var primitive: dnnl_primitive_t?
    private var inputMemory: dnnl_memory_t?
    private var outputMemory: dnnl_memory_t?
    private var weightMemory: dnnl_memory_t?
    private var biasMemory: dnnl_memory_t?
    private var scratchMemory: dnnl_memory_t?
    private var weightStorage: UnsafeMutableRawPointer?
    /// The weights in the primitive's layout (for the pass before the convolution to prefetch).
    private(set) var weightBytes = UnsafeRawBufferPointer(start: nil, count: 0)
    /// False when the weights live in the plan's `ConvolutionWeightCache`.
    private var ownsWeights = true
    private let args: UnsafeMutablePointer<dnnl_exec_arg_t>
    private var argCount: Int32 = 0
    private let scratch: ScratchArena
    private let scratchBytes: Int
    private let inputArg: Int32, outputArg: Int32

    /// Floats of the output (of a forward call).
    var outputCount: Int { batch * outChannels * outHeight * outWidth }

    /// FLOPs of one call (2 per multiply-add).
    var flops: Double {
        2.0 * Double(outputCount * inChannels * kernel * kernel)
    }

    /// Creates a convolution; `weights` are OIHW float32 (PyTorch order), `bias` has outChannels entries.
    /// Forward: input [batch, inC, H, W] -> output [batch, outC, outH, outW]. With `accumulate` the
    /// result is added to what the output already holds. With `backwardData` the call maps the
    /// output gradient to the input gradient (bias, accumulate and relu are then ignored).
    /// With `precision` bf16 a forward convolution over a 16-channel-blocked input takes its input
    /// and weights in bfloat16 and writes float32, blocked or channels-last (others stay float32).
    /// Winograd convolutions run the engine's own kernel where it applies, oneDNN's with `engineWinograd` false.
    init(batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int,
         kernel: Int, stride: Int = 1, padding: Int,
         weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
         inputLayout: ActivationLayout = .blocked16, outputLayout: ActivationLayout = .blocked16,
         accumulate: Bool = false, relu: Bool = false, backwardData: Bool = false,
         winograd: Bool? = nil, engineWinograd: Bool = ConvolutionKernelChoice.engineWinograd, precision: ComputePrecision = .fp32, scratch: ScratchArena) {
        let bf16 = precision == .bf16 && !backwardData && inputLayout == .blocked16
        self.precision = bf16 ? .bf16 : .fp32
        // Winograd F(4x4, 3x3) for 3x3 stride-1 forward convolutions on 16-channel blocks
        // (about twice the direct speed here); direct otherwise or when oneDNN declines.
        let wantWinograd = !bf16 && winograd ?? (kernel == 3 && stride == 1 && padding == 1 && !backwardData
            && inChannels % 16 == 0 && outChannels % 16 == 0 && inputLayout == .blocked16 && outputLayout == .blocked16)
        // On AMX (see `ComputePrecision.convolutionKernels`) bf16 computes channels-last.
        let wantChannelsLast = bf16 && !relu && outputLayout != .nchw && precision.computesChannelsLast()
        self.batch = batch; self.inChannels = inChannels; self.outChannels = outChannels
        self.height = height; self.width = width; self.kernel = kernel
        self.stride = stride; self.padding = padding
        let outH = (height + 2 * padding - kernel) / stride + 1, outW = (width + 2 * padding - kernel) / stride + 1
        outHeight = outH; outWidth = outW
        self.backwardData = backwardData
        self.accumulate = accumulate && !backwardData
        self.scratch = scratch
        args = .allocate(capacity: 6)
        let copy = backwardData ? nil : bias.map { b in
            let copy = UnsafeMutablePointer<Float>.allocate(capacity: outChannels)   // the caller's buffer may go away
            copy.update(from: b, count: outChannels)
            return copy
        }
        biasCopy = copy
        if wantWinograd, engineWinograd, WinogradConvolution.applies(batch: batch, inChannels: inChannels, outChannels: outChannels,
                height: height, width: width, kernel: kernel, stride: stride, padding: padding, backwardData: backwardData,
                inputLayout: inputLayout, outputLayout: outputLayout) {
            let own = WinogradConvolution(batch: batch, inChannels: inChannels, outChannels: outChannels, height: height, width: width,
                                          weights: weights, bias: copy, accumulate: accumulate, relu: relu, scratch: scratch)
            engineKernel = own
            usesWinograd = true
            implementation = WinogradConvolution.implementation
            weightBytes = own.weightBytes
            scratchBytes = own.scratchBytes
            inputArg = kDNNLArgSrc; outputArg = kDNNLArgDst
            return
        }
        let ctx = DNNLContext.shared

        var src = dnnl_memory_desc_t(), dst = dnnl_memory_desc_t()
        var wAny = dnnl_memory_desc_t(), bmd = dnnl_memory_desc_t(), wUser = dnnl_memory_desc_t()
        let computeType = bf16 ? dnnl_bf16 : dnnl_f32
        dnnlCheck(dd_memory_desc_typed(&wAny, 4, Int64(outChannels), Int64(inChannels), Int64(kernel), Int64(kernel), computeType, dnnl_format_tag_any), "w md")
        dnnlCheck(dd_memory_desc(&wUser, 4, Int64(outChannels), Int64(inChannels), Int64(kernel), Int64(kernel), dnnl_oihw), "w user md")
        dnnlCheck(dd_memory_desc(&bmd, 1, Int64(outChannels), 0, 0, 0, dnnl_a), "bias md")

        // The layout the kernel writes: nhwc with `channelsLast`, else the caller's (blocked for bf16
        // kernels, whose nhwc caller gets a reorder).
        func kernelOutputLayout(channelsLast: Bool) -> ActivationLayout {
            channelsLast ? .nhwc : bf16 && outputLayout == .nhwc ? .blocked16 : outputLayout
        }
        // src/dst describe the input/output side (diff_src/diff_dst for backward data); with
        // `channelsLast` both are nhwc. Where dst is not `outputLayout` a reorder writes (or adds) into it.
        func create(_ alg: dnnl_alg_kind_t, channelsLast: Bool) -> dnnl_primitive_desc_t? {
            let srcLayout = channelsLast ? .nhwc : inputLayout, dstLayout = kernelOutputLayout(channelsLast: channelsLast)
            let accumulateInKernel = accumulate && dstLayout == outputLayout
            dnnlCheck(dd_memory_desc_typed(&src, 4, Int64(batch), Int64(inChannels), Int64(height), Int64(width), computeType, srcLayout.tag), "src md")
            dnnlCheck(dd_memory_desc(&dst, 4, Int64(batch), Int64(outChannels), Int64(outH), Int64(outW), dstLayout.tag), "dst md")
            var attr: dnnl_primitive_attr_t?
            dnnlCheck(dnnl_primitive_attr_create(&attr), "attr")
            defer { dnnl_primitive_attr_destroy(attr) }
            dnnlCheck(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user), "scratchpad mode")
            if (accumulateInKernel || relu) && !backwardData {
                var ops: dnnl_post_ops_t?
                dnnlCheck(dnnl_post_ops_create(&ops), "post ops")
                if accumulateInKernel { dnnlCheck(dnnl_post_ops_append_sum(ops, 1), "sum") }
                if relu { dnnlCheck(dnnl_post_ops_append_eltwise(ops, 1, dnnl_eltwise_relu, 0, 0), "relu") }
                dnnlCheck(dnnl_primitive_attr_set_post_ops(attr, ops), "set post ops")
                dnnl_post_ops_destroy(ops)
            }
            var pd: dnnl_primitive_desc_t?
            var fwdDesc = dnnl_convolution_desc_t()
            if backwardData {
                guard dd_convolution_desc(&fwdDesc, dnnl_forward_training, alg, &src, &wAny, nil, &dst, Int64(stride), Int64(padding)) == dnnl_success
                else { return nil }
                var hint: dnnl_primitive_desc_t?
                guard dnnl_primitive_desc_create(&hint, &fwdDesc, nil, ctx.engine, nil) == dnnl_success else { return nil }
                defer { dnnl_primitive_desc_destroy(hint) }
                var bwdDesc = dnnl_convolution_desc_t()
                guard dd_convolution_desc(&bwdDesc, dnnl_backward_data, alg, &src, &wAny, nil, &dst, Int64(stride), Int64(padding)) == dnnl_success,
                      dnnl_primitive_desc_create(&pd, &bwdDesc, attr, ctx.engine, hint) == dnnl_success else { return nil }
            } else {
                let status = bias != nil
                    ? dd_convolution_desc(&fwdDesc, dnnl_forward_inference, alg, &src, &wAny, &bmd, &dst, Int64(stride), Int64(padding))
                    : dd_convolution_desc(&fwdDesc, dnnl_forward_inference, alg, &src, &wAny, nil, &dst, Int64(stride), Int64(padding))
                guard status == dnnl_success, dnnl_primitive_desc_create(&pd, &fwdDesc, attr, ctx.engine, nil) == dnnl_success else { return nil }
            }
            if channelsLast, let found = pd, !ConvolutionPrimitive.implementation(of: found).contains("amx") {
                dnnl_primitive_desc_destroy(found)       // no AMX kernel for this shape: stay blocked
                return nil
            }
            return pd
        }
        // AMX's bf16 kernels (oneDNN's brgconv) read and write channels-last only.
        var pd = wantChannelsLast ? create(dnnl_convolution_direct, channelsLast: true) : nil
        let channelsLast = pd != nil
        if pd == nil, wantWinograd { pd = create(dnnl_convolution_winograd, channelsLast: false) }
        usesWinograd = pd != nil && !channelsLast
        if pd == nil { pd = create(dnnl_convolution_direct, channelsLast: false) }
        ensure(pd != nil, "oneDNN has no \(self.precision.rawValue) convolution for \(inChannels)->\(outChannels) k\(kernel) s\(stride) at \(height)x\(width)")
        bfloat16InputLayout = channelsLast ? .nhwc : .blocked16
        implementation = Self.implementation(of: pd!)
        defer { dnnl_primitive_desc_destroy(pd) }
        dnnlCheck(dnnl_primitive_create(&primitive, pd), "conv primitive")

        let inMD = dnnl_primitive_desc_query_md(pd, backwardData ? dnnl_query_diff_dst_md : dnnl_query_src_md, 0)!
        let outMD = dnnl_primitive_desc_query_md(pd, backwardData ? dnnl_query_diff_src_md : dnnl_query_dst_md, 0)!
        let wMD = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0)!
        let sMD = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)!
        scratchBytes = dnnl_memory_desc_get_size(sMD)
        scratch.reserve(scratchBytes)
        dnnlCheck(dnnl_memory_create(&inputMemory, inMD, ctx.engine, nil), "mem in")
        dnnlCheck(dnnl_memory_create(&outputMemory, outMD, ctx.engine, nil), "mem out")
        dnnlCheck(dnnl_memory_create(&scratchMemory, sMD, ctx.engine, nil), "mem scratch")
        if bf16 {
            // float32 input (the caller's) -> bfloat16 (the primitive's), rounded to nearest even.
            var f32Input = dnnl_memory_desc_t()
            dnnlCheck(dd_memory_desc(&f32Input, 4, Int64(batch), Int64(inChannels), Int64(height), Int64(width), inputLayout.tag), "f32 src md")
            inputConversion = LayoutReorder(from: &f32Input, to: inMD)
            scratch.converted.reserve(dnnl_memory_desc_get_size(inMD))
        }
        if kernelOutputLayout(channelsLast: channelsLast) != outputLayout {
            var target = dnnl_memory_desc_t()
            dnnlCheck(dd_memory_desc(&target, 4, Int64(batch), Int64(outChannels), Int64(outHeight), Int64(outWidth), outputLayout.tag), "output md")
            outputReorder = LayoutReorder(from: outMD, to: &target, accumulate: accumulate)
            scratch.channelsLastOutput.reserve(dnnl_memory_desc_get_size(outMD))
        }

        // Weights: reorder OIHW into the primitive's layout once (or take the copy another plan made).
        if let shared = scratch.sharedWeights?.storage(for: weights, layout: wMD) {
            weightStorage = shared
            ownsWeights = false
        } else {
            let storage = UnsafeMutableRawPointer.allocate(byteCount: max(dnnl_memory_desc_get_size(wMD), 64), alignment: 64)
            Self.reorder(weights, from: &wUser, into: storage, layout: wMD)
            weightStorage = storage
            if let cache = scratch.sharedWeights {
                cache.insert(storage, for: weights, layout: wMD)
                ownsWeights = false
            }
        }
        dnnlCheck(dnnl_memory_create(&weightMemory, wMD, ctx.engine, weightStorage), "mem w")
        weightBytes = UnsafeRawBufferPointer(start: weightStorage, count: dnnl_memory_desc_get_size(wMD))

        inputArg = backwardData ? kDNNLArgDiffDst : kDNNLArgSrc
        outputArg = backwardData ? kDNNLArgDiffSrc : kDNNLArgDst
        args[0] = dnnl_exec_arg_t(arg: inputArg, memory: inputMemory)
        args[1] = dnnl_exec_arg_t(arg: outputArg, memory: outputMemory)
        args[2] = dnnl_exec_arg_t(arg: kDNNLArgWeights, memory: weightMemory)
        args[3] = dnnl_exec_arg_t(arg: kDNNLArgScratchpad, memory: scratchMemory)
        argCount = 4
        if let copy {
            dnnlCheck(dnnl_memory_create(&biasMemory, &bmd, ctx.engine, copy), "mem bias")
            args[4] = dnnl_exec_arg_t(arg: kDNNLArgBias, memory: biasMemory)
            argCount = 5
        }
    }

    private let biasCopy: UnsafeMutablePointer<Float>?

    /// Writes `weights` (described by `source`) into `storage` in `layout` with a oneDNN reorder.
    private static func reorder(_ weights: UnsafePointer<Float>, from source: UnsafePointer<dnnl_memory_desc_t>,
                                into storage: UnsafeMutableRawPointer, layout: UnsafePointer<dnnl_memory_desc_t>) {
        LayoutReorder(from: source, to: layout)(weights, storage)
        dnnlCheck(dnnl_stream_wait(DNNLContext.shared.stream), "wait")
    }

    deinit {
        if primitive != nil { dnnl_primitive_destroy(primitive) }
        for m in [inputMemory, outputMemory, weightMemory, biasMemory, scratchMemory] where m != nil { dnnl_memory_destroy(m) }
        if ownsWeights { weightStorage?.deallocate() }
        biasCopy?.deallocate()
        args.deallocate()
    }

    /// Whether the convolution takes bfloat16 input (then `callAsFunction(bfloat16:_:)` skips the conversion).
    var takesBFloat16: Bool { inputConversion != nil }

    /// Runs a bf16 convolution from input already in bfloat16 (in the layout given at creation).
    func callAsFunction(bfloat16 input: UnsafePointer<UInt16>, _ output: UnsafeMutablePointer<Float>) {
        ensure(takesBFloat16, "a \(precision.rawValue) convolution was handed bfloat16 input")
        execute(input: UnsafeMutableRawPointer(mutating: input), output: output)
    }

    /// Runs the convolution from `input` into `output` (both in the layouts given at creation).
    func callAsFunction(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>) {
        if let convert = inputConversion {
            let converted = scratch.converted.pointer!
            convert(input, converted)
            execute(input: converted, output: output)
        } else {
            execute(input: UnsafeMutableRawPointer(mutating: input), output: output)
        }
    }

    /// An accumulating convolution's call that adds `residual` instead of `output`'s old values: the
    /// engine's kernel reads them where they lie; other kernels have them copied into `output` first.
    func callAsFunction(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, adding residual: UnsafePointer<Float>) {
        ensure(accumulate, "only an accumulating convolution adds a residual")
        if let engineKernel, inputConversion == nil {
            engineKernel(input, output, residual: residual, scratch: scratch.pointer!)
        } else {
            if UnsafePointer(output) != residual { copyKernel(residual, output, count: outputCount) }
            self(input, output)
        }
    }

    /// Runs the primitive on `input` (in the primitive's own format) into `output`.
    private func execute(input: UnsafeMutableRawPointer?, output: UnsafeMutablePointer<Float>) {
        if let engineKernel {
            engineKernel(input!.assumingMemoryBound(to: Float.self), output, scratch: scratch.pointer!)
            return
        }
        let stream = DNNLContext.shared.stream
        dnnl_memory_set_data_handle(inputMemory, input)
        dnnl_memory_set_data_handle(outputMemory, outputReorder == nil ? UnsafeMutableRawPointer(output) : scratch.channelsLastOutput.pointer)
        dnnl_memory_set_data_handle(scratchMemory, scratch.pointer)
        dnnlCheck(dnnl_primitive_execute(primitive, stream, argCount, args), "conv exec")
        outputReorder?(scratch.channelsLastOutput.pointer!, output)
    }

    /// oneDNN's name for the kernel a primitive descriptor chose.
    private static func implementation(of pd: dnnl_primitive_desc_t) -> String {
        var info: UnsafePointer<CChar>?
        guard dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) == dnnl_success, let info else { return "" }
        return String(cString: info)
    }
}
