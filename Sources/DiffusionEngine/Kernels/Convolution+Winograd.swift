import CDNNL
import CWinograd

/// Which kernel the plans built in a task run their Winograd convolutions on.
public enum ConvolutionKernelChoice {
    /// True (the default): the engine's own kernel where it applies; false: oneDNN's (for
    /// comparisons: the benchmark's second fp32 row, the tests).
    @TaskLocal public static var engineWinograd = true

    /// The engine's Winograd kernel and its revision when this CPU runs it, else nil (records name
    /// it: a new revision changes the bits of fp32 images).
    public static var engineWinogradKernel: String? { CPUFeatures.current.avx512 ? WinogradConvolution.implementation : nil }
}

/// The engine's own Winograd F(4x4, 3x3) convolution (Sources/CWinograd) for the UNet's 3x3,
/// stride-1, padding-1 float32 convolutions on 16-channel blocks, on CPUs with AVX-512. On the
/// UNet's small layers (8 images, 28x28 and below, 32-128 channels) it is about 1.3x oneDNN 2.6's
/// `jit_wino_4x3` (docs/bench/profile.md), and each tile's arithmetic is the same wherever it sits
/// in a batch and whatever the CPU's caches, so its bits follow the instruction set alone.
final class WinogradConvolution {
    /// The kernel's name in records and logs, with its revision (a new revision changes bits).
    static let implementation = "diffusiond_wino_4x3:avx512 r1"

    let batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int
    /// The transformed weights U[36][inChannels][outChannels] (shared by the plans of one network).
    let weightBytes: UnsafeRawBufferPointer
    /// Scratch bytes one call needs (per thread).
    let scratchBytes: Int
    private let flags: Int32
    private let bias: UnsafePointer<Float>?
    private let threads: Int
    private let blocks: Int

    /// Whether the kernel computes such a convolution on this CPU: on one thread (the UNet's lanes),
    /// or where its blocks of tiles give each of oneDNN's OpenMP threads several (the kernel splits
    /// only blocks between threads; a one-image 14x14 call has one block, so oneDNN runs it there).
    static func applies(batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int, kernel: Int, stride: Int,
                        padding: Int, backwardData: Bool, inputLayout: ActivationLayout, outputLayout: ActivationLayout) -> Bool {
        guard CPUFeatures.current.avx512 && kernel == 3 && stride == 1 && padding == 1 && !backwardData
            && inChannels % 16 == 0 && outChannels % 16 == 0 && inputLayout == .blocked16 && outputLayout == .blocked16 else { return false }
        let threads = Int(omp_get_max_threads())
        return threads == 1 || Int(dd_winograd_blocks(Int32(batch), Int32(height), Int32(width))) >= 4 * threads
    }

    /// Transforms `weights` (OIHW) once, or takes the copy another plan made (`scratch.sharedWeights`);
    /// reserves the scratch of the OpenMP threads oneDNN would use here (one inside a lane).
    /// `bias` (outChannels floats) must outlive the convolution.
    init(batch: Int, inChannels: Int, outChannels: Int, height: Int, width: Int,
         weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?, accumulate: Bool, relu: Bool, scratch: ScratchArena) {
        self.batch = batch; self.inChannels = inChannels; self.outChannels = outChannels
        self.height = height; self.width = width
        self.bias = bias
        flags = (accumulate ? Int32(DD_WINOGRAD_ACCUMULATE) : 0) | (relu ? Int32(DD_WINOGRAD_RELU) : 0)
        blocks = Int(dd_winograd_blocks(Int32(batch), Int32(height), Int32(width)))
        threads = max(1, min(Int(omp_get_max_threads()), blocks))
        scratchBytes = dd_winograd_scratch_floats(Int32(inChannels), Int32(outChannels)) * 4
        scratch.reserve(scratchBytes * threads)

        let floats = dd_winograd_weight_floats(Int32(inChannels), Int32(outChannels))
        var layout = dnnl_memory_desc_t()   // the cache's key: a 3-D [36, in, out] layout no oneDNN weight has
        dnnlCheck(dd_memory_desc(&layout, 3, 36, Int64(inChannels), Int64(outChannels), 0, dnnl_abc), "winograd weights md")
        if let shared = scratch.sharedWeights?.storage(for: weights, layout: &layout) {
            weightBytes = UnsafeRawBufferPointer(start: shared, count: floats * 4)
            ownedWeights = nil
        } else {
            let storage = UnsafeMutableRawPointer.allocate(byteCount: floats * 4, alignment: 64)
            dd_winograd_transform_weights(weights, Int32(inChannels), Int32(outChannels), storage.assumingMemoryBound(to: Float.self))
            weightBytes = UnsafeRawBufferPointer(start: storage, count: floats * 4)
            if let cache = scratch.sharedWeights {
                cache.insert(storage, for: weights, layout: &layout)
                ownedWeights = nil
            } else {
                ownedWeights = storage
            }
        }
    }

    private let ownedWeights: UnsafeMutableRawPointer?

    /// Convolves `input` into `output` (both [batch, channels/16, height, width, 16]) using `scratch`
    /// (at least `scratchBytes` per thread, 64-byte aligned); the tile blocks are split between threads.
    /// An accumulating convolution adds `residual` (in `output`'s shape) where given, else `output`'s old values.
    func callAsFunction(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>? = nil,
                        scratch: UnsafeMutableRawPointer) {
        let u = weightBytes.baseAddress!.assumingMemoryBound(to: Float.self)
        let ic = Int32(inChannels), oc = Int32(outChannels), n = Int32(batch), h = Int32(height), w = Int32(width)
        parallelRegion(threads: threads) { part, parts in
            let own = (scratch + part * scratchBytes).assumingMemoryBound(to: Float.self)
            dd_winograd_forward(input, output, residual, u, bias, n, ic, oc, h, w, flags, own, Int32(part), Int32(parts))
        }
    }

    deinit { ownedWeights?.deallocate() }
}
