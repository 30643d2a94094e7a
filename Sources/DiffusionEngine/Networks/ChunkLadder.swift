import Foundation

/// Evaluation in chunks of a few fixed sizes, which makes an image's result independent of its batch.
///
/// oneDNN's convolutions give bit-identical per-image results for any position of an image within
/// a call of a given size, and for some other sizes too, but not for all: which sizes agree depends
/// on the CPU's kernels and the thread count (on an AMD EPYC with 2 threads 16, 32 and 64 agree
/// and 8, 12, 24, 48 do not; with 1 thread 12 to 48 agree). The adapters below therefore run the
/// networks only on chunks of the sizes in `sizes`: full chunks of `fullRows` images, and a short
/// batch or a tail padded with zeros to the smallest size that fits. A size is in `sizes` only if a
/// probe on the running machine found its results bit-identical to those of a full chunk, so a
/// resumed job, another batch size or classifier-free guidance's doubled batch reproduce every image
/// to the bit. The UNet computes every multiple of `ADMUNet.laneRows` as single-threaded pieces of
/// that size, so its probe admits every such multiple and a 10-image job pays for 16 rows, a
/// 1-image job for 8; the classifier's threaded kernels admit fewer.
struct ChunkLadder {
    /// Images per full chunk: 64 is where the networks reach their full speed on these CPUs.
    static let fullRows = 64
    /// Smaller chunk sizes a probe may admit by default, smallest first.
    static let candidates = [16, 32]
    /// The UNet's candidates: every multiple of its lane size below a full chunk.
    static let laneMultiples = Array(stride(from: ADMUNet.laneRows, to: fullRows, by: ADMUNet.laneRows))

    /// The chunk sizes in use, smallest first; the last is `fullRows`.
    let sizes: [Int]
    private var inputs: [Int: Tensor] = [:]

    init(sizes: [Int] = [ChunkLadder.fullRows]) {
        ensure(sizes.last == Self.fullRows && sizes == sizes.sorted(), "a chunk ladder ends at \(Self.fullRows)")
        self.sizes = sizes
    }

    /// The ladder of the candidates whose outputs agree bit for bit with a full chunk's:
    /// `evaluate(rows)` returns the flat output of the first `rows` probe images run as one chunk.
    static func probed(candidates: [Int] = candidates, _ evaluate: (Int) throws -> [Float]) rethrows -> ChunkLadder {
        let full = try evaluate(fullRows)
        let perImage = full.count / fullRows
        var sizes: [Int] = []
        for rows in candidates where try evaluate(rows) == Array(full[0 ..< rows * perImage]) { sizes.append(rows) }
        return ChunkLadder(sizes: sizes + [fullRows])
    }

    /// `cache`, or (stored there) the ladder probed with `evaluate(x, timesteps)` on deterministic
    /// probe images of `imageShape` with timesteps spread over 0..<1000.
    static func cached(_ cache: inout ChunkLadder?, imageShape: [Int], candidates: [Int] = candidates,
                       evaluate: (Tensor, [Int]) throws -> [Float]) rethrows -> ChunkLadder {
        if let cache { return cache }
        let ladder = try probed(candidates: candidates) { rows in
            try evaluate(probeInput(rows: rows, imageShape: imageShape), (0 ..< rows).map { 61 * $0 % 1000 })
        }
        cache = ladder
        return ladder
    }

    /// The size of the chunk that takes the next `remaining` images.
    func rows(for remaining: Int) -> Int { sizes.first { $0 >= remaining } ?? Self.fullRows }

    /// Runs `body(chunkInput, rowsUsed, firstRow)` over x in chunks of the ladder's sizes; the chunk
    /// input is a reused [rows, ...] tensor whose unused rows are zero.
    mutating func forEachChunk(of x: Tensor, _ body: (Tensor, Int, Int) throws -> Void) rethrows {
        let n = x.shape.first ?? 0
        let perImage = n > 0 ? x.count / n : 0
        var first = 0
        while first < n {
            let rows = self.rows(for: n - first)
            let used = min(rows, n - first)
            let shape = [rows] + x.shape.dropFirst()
            let key = rows * perImage
            let chunk = inputs[key] ?? Tensor(shape: shape)
            inputs[key] = chunk
            chunk.reshape(shape)
            chunk.data.update(from: x.data + first * perImage, count: used * perImage)
            if used < rows { (chunk.data + used * perImage).update(repeating: 0, count: (rows - used) * perImage) }
            try body(chunk, used, first)
            first += used
        }
    }

    /// `values[first ..< first + used]` padded to `rows` entries by repeating the first one.
    static func padded(_ values: [Int], first: Int, used: Int, rows: Int) -> [Int] {
        let slice = Array(values[first ..< first + used])
        return slice + Array(repeating: slice[0], count: rows - used)
    }

    /// Deterministic probe inputs: `rows` images of `shape` (per image) in [-1, 1).
    static func probeInput(rows: Int, imageShape: [Int]) -> Tensor {
        let perImage = imageShape.reduce(1, *)
        var s: UInt64 = 0x9E37_79B9_7F4A_7C15
        let values = (0 ..< rows * perImage).map { _ -> Float in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(s >> 40) / Float(1 << 23) - 1
        }
        return Tensor(shape: [rows] + imageShape, values: values)
    }
}
