import CBLAS
import Foundation

/// Micro-benchmarks of the back ends, used to report a network's speed relative to the machine.
public enum PeakMeasurement {
    private static func seconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    /// Best-of-`repeats` GFLOP/s of OpenBLAS sgemm on square n x n matrices.
    public static func sgemmGFLOPS(size n: Int = 2048, repeats: Int = 5) -> Double {
        ComputeRuntime.prepareCallingThread()
        let a = Tensor(shape: [n, n]), b = Tensor(shape: [n, n]), c = Tensor(shape: [n, n])
        a.fill(0.5); b.fill(0.25)
        var best = Double.infinity
        for _ in 0..<(repeats + 1) {
            let t0 = seconds()
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a.data, Int32(n), b.data, Int32(n), 0, c.data, Int32(n))
            best = min(best, seconds() - t0)
        }
        return 2 * Double(n * n * n) / best / 1e9
    }

    /// Best-of-`repeats` GFLOP/s of one oneDNN 3x3 convolution (stride 1, pad 1) in the engine's blocked
    /// layout (or NHWC), direct algorithm or Winograd (fp32 only); Winograd's rate counts direct-convolution
    /// FLOPs. With `precision` bf16 the direct convolution takes bfloat16 input and weights. With `lanes`
    /// every thread runs its own single-threaded convolution over its share of the batch, all at once
    /// (as the UNet's lanes do); without, one convolution uses every thread. Winograd is oneDNN's, or
    /// with `engineWinograd` the engine's own kernel (`WinogradConvolution`, AVX-512 CPUs).
    public static func convolutionGFLOPS(batch: Int = 64, channels: Int = 64, size: Int = 32,
                                         repeats: Int = 5, nhwc: Bool = false, winograd: Bool = false, engineWinograd: Bool = false,
                                         precision: ComputePrecision = .fp32, lanes: Bool = false) -> Double {
        ComputeRuntime.prepareCallingThread()
        let w = Tensor(shape: [channels, channels, 3, 3]); w.fill(0.01)
        let bias = Tensor(shape: [channels])
        let layout: ActivationLayout = nhwc ? .nhwc : .blocked16
        let threads = lanes ? max(1, min(ComputeRuntime.dnnlThreads, batch)) : 1
        let rows = batch / threads
        func convolution() -> ConvolutionPrimitive {   // each with its own scratchpad
            ConvolutionPrimitive(batch: rows, inChannels: channels, outChannels: channels, height: size, width: size,
                                 kernel: 3, padding: 1, weights: w.data, bias: bias.data,
                                 inputLayout: layout, outputLayout: layout, winograd: winograd, engineWinograd: engineWinograd,
                                 precision: precision, scratch: ScratchArena())
        }
        let convs = (0 ..< threads).map { _ in lanes ? ComputeRuntime.singleThreaded(convolution) : convolution() }
        let xs = convs.map { _ in Tensor(shape: [rows, channels, size, size]) }
        let ys = convs.map { _ in Tensor(shape: [rows, channels, size, size]) }
        for x in xs { x.fill(0.5) }
        var best = Double.infinity
        for _ in 0..<(repeats + 1) {
            let t0 = seconds()
            if lanes {
                ComputeRuntime.inSingleThreadedLanes(threads) { lane in convs[lane](xs[lane].data, ys[lane].data) }
            } else {
                convs[0](xs[0].data, ys[0].data)
            }
            best = min(best, seconds() - t0)
        }
        return convs.reduce(0) { $0 + $1.flops } / best / 1e9
    }

    /// The kernel of a 3x3 convolution of the UNet (64 -> 64 channels, 14x14, batch 64) as the engine
    /// builds it in `precision`, e.g. "diffusiond_wino_4x3:avx512 r1" or oneDNN's "jit_bf16:avx512_core_bf16".
    public static func convolutionKernel(precision: ComputePrecision) -> String {
        let w = Tensor(shape: [64, 64, 3, 3]), bias = Tensor(shape: [64])
        return ConvolutionPrimitive(batch: 64, inChannels: 64, outChannels: 64, height: 14, width: 14, kernel: 3, padding: 1,
                                    weights: w.data, bias: bias.data, precision: precision, scratch: ScratchArena()).implementation
    }
}
