import Testing
@testable import DiffusionEngine

/// A job's image must not depend on which other images share its batch: resumed jobs regenerate
/// the missing images in batches of another size and composition, and classifier-free guidance
/// doubles the batch. The sampler adapters run the networks on batches of one fixed size for
/// that (batches of 1 to 300 images here: padded calls and split ones).
@Suite struct BatchInvarianceTests {
    static let unetArchitecture = ADMArchitecture(
        type: "adm-unet", imageSize: 28, inChannels: 1, outChannels: 2, modelChannels: 32, numResBlocks: 2,
        attentionResolutions: [4], channelMult: [1, 2, 2], numClasses: 11, numHeads: 1, numHeadChannels: 32,
        useScaleShiftNorm: true, resblockUpdown: true, useNewAttentionOrder: false)
    static let classifierArchitecture = ADMArchitecture(
        type: "adm-encoder", imageSize: 28, inChannels: 1, outChannels: 10, modelChannels: 32, numResBlocks: 1,
        attentionResolutions: [4], channelMult: [1, 2, 2], numHeads: 1, numHeadChannels: 32,
        useScaleShiftNorm: true, resblockUpdown: true, useNewAttentionOrder: true, pool: "attention")

    /// Input of image i, a pure function of i.
    static func input(_ i: Int) -> [Float] {
        var s = UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
        return (0 ..< 784).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: s >> 11) % 2000) / 1000 - 1
        }
    }

    static func rows(_ t: Tensor, _ n: Int) -> [[Float]] {
        let per = t.count / n
        return (0 ..< n).map { Array(t.array[$0 * per ..< ($0 + 1) * per]) }
    }

    /// Batches of other sizes, orders and compositions, including a doubled one and a tail.
    /// (Padded to each chunk size the probe admits: for the UNet 7 to 8, 15 to 16, 17 and 20 to 24, 40 to 40.)
    static let batches: [[Int]] = [[7], [3, 4, 5, 6, 7], Array(5 ..< 20), Array(2 ..< 19), [19, 7, 0], Array(0 ..< 20) + Array(0 ..< 20),
                                   Array(repeating: Array(0 ..< 20), count: 4).flatMap { $0 }.reversed(),
                                   Array(repeating: Array(0 ..< 20), count: 15).flatMap { $0 }]

    /// Names the images whose rows differ from the reference (empty when all are bit-identical).
    static func mismatches(_ reference: [[Float]], _ batch: [Int], _ got: [[Float]]) -> [Int] {
        batch.enumerated().filter { got[$0.offset] != reference[$0.element] }.map(\.element)
    }

    @Test(arguments: ComputePrecision.allCases.filter { $0.unsupportedReason(on: .current) == nil })
    func unetPredictionIsBitIdenticalWhateverTheBatch(precision: ComputePrecision) throws {
        let net = try ADMUNet(architecture: Self.unetArchitecture, weights: try RandomWeights.adm(Self.unetArchitecture))
        let predictor = UNetNoisePredictor(precision == .fp32 ? net : try ADMUNet(net, precision: precision))
        func predict(_ images: [Int]) throws -> [[Float]] {
            let x = Tensor(shape: [images.count, 1, 28, 28], values: images.flatMap(Self.input))
            let out = try predictor.predict(x, timesteps: images.map { 37 * $0 % 1000 }, classes: images.map { $0 % 11 })
            return Self.rows(out, images.count)
        }
        let reference = try predict(Array(0 ..< 20))
        for batch in Self.batches {
            let differing = Self.mismatches(reference, batch, try predict(batch))
            #expect(differing.isEmpty, "batch of \(batch.count): images \(differing) differ")
        }
    }

    @Test func classifierGradientIsBitIdenticalWhateverTheBatch() throws {
        let gradient = ClassifierGuidanceGradient(try NoisyClassifier(
            architecture: Self.classifierArchitecture, weights: try RandomWeights.adm(Self.classifierArchitecture)))
        func gradients(_ images: [Int]) throws -> [[Float]] {
            let x = Tensor(shape: [images.count, 1, 28, 28], values: images.flatMap(Self.input))
            let g = try gradient.gradientOfLogProbability(x, timesteps: images.map { 53 * $0 % 1000 }, classes: images.map { $0 % 10 })
            return Self.rows(g, images.count)
        }
        let reference = try gradients(Array(0 ..< 20))
        for batch in Self.batches {
            let differing = Self.mismatches(reference, batch, try gradients(batch))
            #expect(differing.isEmpty, "batch of \(batch.count): images \(differing) differ")
        }
    }

    /// The ladder takes full chunks of 64, then the smallest admitted size for the tail; it admits
    /// only sizes whose probe output matches a full chunk's.
    @Test func ladderChunksAndProbe() throws {
        var ladder = ChunkLadder(sizes: [16, 32, 64])
        #expect([1, 16, 17, 32, 33, 64, 65].map(ladder.rows) == [16, 16, 32, 32, 64, 64, 64])
        var calls: [(rows: Int, used: Int, first: Int)] = []
        ladder.forEachChunk(of: Tensor(shape: [150, 1, 2, 2])) { chunk, used, first in
            calls.append((chunk.shape[0], used, first))
        }
        #expect(calls.map(\.rows) == [64, 64, 32] && calls.map(\.used) == [64, 64, 22] && calls.map(\.first) == [0, 64, 128])
        // A probe whose 32-row output differs from a full chunk's first rows admits 16 only.
        let probed = ChunkLadder.probed { rows in (0 ..< rows).map { Float($0) + (rows == 32 ? 0.5 : 0) } }
        #expect(probed.sizes == [16, 64])
        let predictor = UNetNoisePredictor(try ADMUNet(architecture: Self.unetArchitecture,
                                                       weights: try RandomWeights.adm(Self.unetArchitecture)))
        // The UNet runs every multiple of its lane size as single-threaded lane pieces: all pass.
        #expect(predictor.chunkSizes == ChunkLadder.laneMultiples + [64])
        print("chunk sizes admitted on this machine: \(predictor.chunkSizes)")
    }

    /// A lane-sized multiple is computed by the same single-threaded pieces whatever the number of
    /// threads: one thread and every core give the same bits (records then hold on other core counts).
    @Test func unetOutputDoesNotDependOnTheThreadCount() throws {
        let net = try ADMUNet(architecture: Self.unetArchitecture, weights: try RandomWeights.adm(Self.unetArchitecture))
        let images = Array(0 ..< 24)
        let x = Tensor(shape: [24, 1, 28, 28], values: images.flatMap(Self.input))
        let threads = ComputeRuntime.dnnlThreads
        defer { ComputeRuntime.configure(dnnlThreads: threads) }
        var outputs: [[Float]] = []
        for count in [1, 2, 3] {
            ComputeRuntime.configure(dnnlThreads: count)
            outputs.append(try net.forward(x, timesteps: images.map { 37 * $0 % 1000 }, classes: images.map { $0 % 11 }).array)
        }
        #expect(outputs[0] == outputs[1] && outputs[0] == outputs[2])
        #expect(outputs[0].contains { $0 != 0 } && outputs[0].allSatisfy(\.isFinite))
    }
}
