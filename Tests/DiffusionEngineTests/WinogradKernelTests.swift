@testable import DiffusionEngine
import Foundation
import Testing

/// The engine's own Winograd F(4x4, 3x3) kernel (`WinogradConvolution`) against a float64 loop and
/// against oneDNN's Winograd, and the property the UNet's bit-identity rests on: a tile's result does
/// not depend on its neighbours in the batch or on how the tiles are split between threads.
@Suite(.enabled(if: CPUFeatures.current.avx512, "the engine's Winograd kernel needs AVX-512"))
struct WinogradKernelTests {
    /// NCHW -> 16-channel blocks ([n][c/16][h][w][16]).
    static func blocked(_ x: [Float], batch n: Int, channels c: Int, pixels: Int) -> [Float] {
        var out = [Float](repeating: 0, count: x.count)
        for s in 0..<n { for ch in 0..<c { for q in 0..<pixels {
            out[((s * c / 16 + ch / 16) * pixels + q) * 16 + ch % 16] = x[(s * c + ch) * pixels + q]
        } } }
        return out
    }

    /// conv(x) + bias (+ old, then relu) in float64, NCHW.
    static func reference(_ x: [Float], _ w: [Float], _ b: [Float], old: [Float]?, relu: Bool,
                          n: Int, ci: Int, co: Int, h: Int, wd: Int) -> [Double] {
        var out = [Double](repeating: 0, count: n * co * h * wd)
        for s in 0..<n { for o in 0..<co { for i in 0..<h { for j in 0..<wd {
            var acc = Double(b[o])
            for c in 0..<ci { for p in 0..<3 { for q in 0..<3 {
                let y = i + p - 1, xx = j + q - 1
                if y >= 0 && y < h && xx >= 0 && xx < wd {
                    acc += Double(x[((s * ci + c) * h + y) * wd + xx]) * Double(w[((o * ci + c) * 3 + p) * 3 + q])
                }
            } } }
            let k = ((s * co + o) * h + i) * wd + j
            if let old { acc += Double(old[k]) }
            out[k] = relu ? max(0, acc) : acc
        } } } }
        return out
    }

    struct Case: Sendable, CustomTestStringConvertible {
        let n: Int, ci: Int, co: Int, h: Int, w: Int, accumulate: Bool, relu: Bool
        var testDescription: String { "\(n)x\(ci)->\(co) \(h)x\(w)\(accumulate ? " +=" : "")\(relu ? " relu" : "")" }
    }

    /// Tiles over the edge (7, 5x9, 14), one and several blocks of tiles, every product kernel
    /// (16, 32 and 64 output columns, 12 or 6 rows and the narrower ones for a block's last 4 or 8
    /// rows), the sum and relu post-ops. Tiles per block: 12; 6 (8 rows of 16 columns); 32 (6 x 64 four
    /// times, then 4 x 64 twice); 36, 36, 26 (28 rows: 6 x 64 and 12 x 32, then 4 of each);
    /// 20 (12 + 8 rows of 32 columns); 16 (12 + 4 rows of 32 and of 16 columns).
    static let cases = [
        Case(n: 3, ci: 32, co: 32, h: 7, w: 7, accumulate: false, relu: false),
        Case(n: 1, ci: 48, co: 16, h: 5, w: 9, accumulate: true, relu: false),
        Case(n: 2, ci: 16, co: 64, h: 14, w: 14, accumulate: false, relu: true),
        Case(n: 2, ci: 64, co: 96, h: 28, w: 28, accumulate: true, relu: true),
        Case(n: 5, ci: 32, co: 32, h: 7, w: 7, accumulate: false, relu: false),
        Case(n: 1, ci: 16, co: 48, h: 14, w: 14, accumulate: true, relu: false),
    ]

    @Test(arguments: cases)
    func matchesFloat64LoopAndOneDNN(_ c: Case) {
        let pixels = c.h * c.w
        let x = randomValues(c.n * c.ci * pixels, seed: 31), w = randomValues(c.co * c.ci * 9, seed: 32)
        let b = randomValues(c.co, seed: 33), old = randomValues(c.n * c.co * pixels, seed: 34)
        let want = Self.blocked(Self.reference(x, w, b, old: c.accumulate ? old : nil, relu: c.relu, n: c.n, ci: c.ci, co: c.co, h: c.h, wd: c.w)
            .map { Float($0) }, batch: c.n, channels: c.co, pixels: pixels)
        let input = Tensor(shape: [x.count], values: Self.blocked(x, batch: c.n, channels: c.ci, pixels: pixels))
        let wT = Tensor(shape: [c.co, c.ci, 3, 3], values: w), bT = Tensor(shape: [c.co], values: b)
        func run(engineKernel: Bool) -> (String, [Float]) {
            let conv = ComputeRuntime.singleThreaded {   // as in the UNet's lanes
                ConvolutionPrimitive(batch: c.n, inChannels: c.ci, outChannels: c.co, height: c.h, width: c.w, kernel: 3, padding: 1,
                                     weights: wT.data, bias: bT.data, accumulate: c.accumulate, relu: c.relu,
                                     engineWinograd: engineKernel, scratch: ScratchArena())
            }
            let y = Tensor(shape: [want.count], values: Self.blocked(old, batch: c.n, channels: c.co, pixels: pixels))
            conv(input.data, y.data)
            return (conv.implementation, Array(UnsafeBufferPointer(start: y.data, count: y.count)))
        }
        let (ours, got) = run(engineKernel: true), (theirs, oneDNN) = run(engineKernel: false)
        #expect(ours == WinogradConvolution.implementation)
        #expect(theirs.contains("wino"))   // oneDNN's F(4x4, 3x3) or, for small batches, F(2x2, 3x3)
        let scale = want.reduce(Float(0)) { max($0, abs($1)) }
        let errorToLoop = zip(got, want).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) } / scale
        let errorToOneDNN = zip(got, oneDNN).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) } / scale
        // F(4x4, 3x3) in float32 stays within some 1e-5 of the largest output (its transforms scale by up to 8).
        #expect(errorToLoop < 2e-5, "max error relative to the largest output: \(errorToLoop)")
        #expect(errorToOneDNN < 4e-5)
    }

    /// Many images in one call (two threads splitting the tile blocks) give each image the bits it
    /// gets alone in a one-image call on one thread, at 28x28 (tiles of several images share a block)
    /// and at 7x7 (a block holds nine images); the batched and the one-image calls run a tile's
    /// products in different microkernels (blocks of 36 rows against 28 and 24, or 4). A one-image
    /// call on two threads is left to oneDNN.
    @Test(arguments: [(28, 9), (7, 72)])
    func imagesDoNotDependOnTheirBatch(size: Int, n: Int) {
        let ci = 32, co = 64, pixels = size * size
        let w = Tensor(shape: [co, ci, 3, 3], values: randomValues(co * ci * 9, seed: 41))
        let b = Tensor(shape: [co], values: randomValues(co, seed: 42))
        let x = Tensor(shape: [n * ci * pixels], values: randomValues(n * ci * pixels, seed: 43))
        let batched = ConvolutionPrimitive(batch: n, inChannels: ci, outChannels: co, height: size, width: size, kernel: 3, padding: 1,
                                           weights: w.data, bias: b.data, scratch: ScratchArena())
        let single = ComputeRuntime.singleThreaded {
            ConvolutionPrimitive(batch: 1, inChannels: ci, outChannels: co, height: size, width: size, kernel: 3, padding: 1,
                                 weights: w.data, bias: b.data, scratch: ScratchArena())
        }
        #expect(batched.implementation == WinogradConvolution.implementation && single.implementation == batched.implementation)
        if ComputeRuntime.dnnlThreads > 1 {
            let small = ConvolutionPrimitive(batch: 1, inChannels: ci, outChannels: co, height: 14, width: 14, kernel: 3, padding: 1,
                                             weights: w.data, bias: b.data, scratch: ScratchArena())
            #expect(small.implementation != WinogradConvolution.implementation)
        }
        let y = Tensor(shape: [n * co * pixels])
        batched(x.data, y.data)
        for image in 0..<n {
            let alone = Tensor(shape: [co * pixels])
            single(x.data + image * ci * pixels, alone.data)
            let mine = Array(UnsafeBufferPointer(start: y.data + image * co * pixels, count: co * pixels))
            #expect(mine == Array(UnsafeBufferPointer(start: alone.data, count: co * pixels)), "image \(image)")
        }
    }

    /// An accumulating convolution that adds a residual from another buffer (the identity path of
    /// a ResBlock) gives the bits of copying the residual into the output and accumulating there,
    /// on the engine's kernel and on oneDNN's, and leaves the residual as it was.
    @Test(arguments: [true, false])
    func addingAResidualEqualsAccumulatingOntoItsCopy(engineKernel: Bool) {
        let n = 8, ci = 32, co = 32, size = 14, pixels = size * size
        let w = Tensor(shape: [co, ci, 3, 3], values: randomValues(co * ci * 9, seed: 51))
        let b = Tensor(shape: [co], values: randomValues(co, seed: 52))
        let x = Tensor(shape: [n * ci * pixels], values: randomValues(n * ci * pixels, seed: 53))
        let residualValues = randomValues(n * co * pixels, seed: 54)
        let residual = Tensor(shape: [n * co * pixels], values: residualValues)
        let conv = ComputeRuntime.singleThreaded {
            ConvolutionPrimitive(batch: n, inChannels: ci, outChannels: co, height: size, width: size, kernel: 3, padding: 1,
                                 weights: w.data, bias: b.data, accumulate: true, engineWinograd: engineKernel, scratch: ScratchArena())
        }
        #expect((conv.implementation == WinogradConvolution.implementation) == engineKernel)
        let copied = Tensor(shape: [n * co * pixels], values: residualValues)
        conv(x.data, copied.data)
        let added = Tensor(shape: [n * co * pixels], values: [Float](repeating: .nan, count: n * co * pixels))
        conv(x.data, added.data, adding: residual.data)
        let want = Array(UnsafeBufferPointer(start: copied.data, count: copied.count))
        #expect(Array(UnsafeBufferPointer(start: added.data, count: added.count)) == want)
        #expect(Array(UnsafeBufferPointer(start: residual.data, count: residual.count)) == residualValues)
        #expect(want != residualValues)
    }
}
