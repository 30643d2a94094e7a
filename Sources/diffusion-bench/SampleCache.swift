// The sample cache of the quality sweep: each row's N images as uint8 [N, C, H, W] plus the
// requested class of each image, in a safetensors file whose name carries a SHA-256 of every
// setting that determines the pixels (training/work/bench-samples/ by default). Reruns and the
// quality stage read them instead of sampling again. Python reads them with
// training/common.py's load_safetensors.
import DiffusionEngine
import Foundation

/// One row's samples.
struct SampleSet {
    /// Pixels, [N, C, H, W] planes, clamp((x + 1) * 127.5) rounded as the daemon writes them.
    var pixels: [UInt8]
    var shape: [Int]
    /// The class each image was asked for (-1 for none).
    var requestedClasses: [Int]
    /// Free-form strings: the cache key, the job, the resolved sampling configuration, timings.
    var metadata: [String: String]

    var count: Int { shape[0] }

    /// The images as an engine tensor [N, C, H, W] in [-1, 1] (pixel / 127.5 - 1, the training normalisation).
    func tensor() -> Tensor {
        let t = Tensor(shape: shape)
        for i in 0..<pixels.count { t.data[i] = Float(pixels[i]) / 127.5 - 1 }
        return t
    }
}

enum SampleCacheError: Error, CustomStringConvertible {
    case malformed(String, String)
    var description: String {
        switch self {
        case .malformed(let path, let why): "\(path): not a sample file (\(why))"
        }
    }
}

enum SampleCache {
    static let format = "diffusiond-bench-samples/1"

    /// Writes `set` atomically (a temporary file renamed into place).
    static func write(_ set: SampleSet, to path: String) throws {
        let imageBytes = set.pixels.count, classBytes = 8 * set.requestedClasses.count
        let header: [String: Any] = [
            "__metadata__": set.metadata.merging(["format": format]) { a, _ in a },
            "images": ["dtype": "U8", "shape": set.shape, "data_offsets": [0, imageBytes]] as [String: Any],
            "classes": ["dtype": "I64", "shape": [set.requestedClasses.count],
                        "data_offsets": [imageBytes, imageBytes + classBytes]] as [String: Any],
        ]
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys, .withoutEscapingSlashes])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(contentsOf: set.pixels)
        for c in set.requestedClasses {
            var v = Int64(c).littleEndian
            withUnsafeBytes(of: &v) { out.append(contentsOf: $0) }
        }
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let temporary = path + ".tmp-\(getpid())"
        try out.write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }

    /// Reads a file written by `write`.
    static func read(_ path: String) throws -> SampleSet {
        guard let data = FileManager.default.contents(atPath: path) else { throw CocoaError(.fileReadNoSuchFile, userInfo: [NSFilePathErrorKey: path]) }
        let bytes = [UInt8](data)
        guard bytes.count >= 8 else { throw SampleCacheError.malformed(path, "shorter than 8 bytes") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n <= UInt64(bytes.count - 8),
              let header = try? JSONSerialization.jsonObject(with: Data(bytes[8 ..< 8 + Int(n)])) as? [String: Any] else {
            throw SampleCacheError.malformed(path, "bad header")
        }
        let base = 8 + Int(n)
        func entry(_ name: String, _ dtype: String) throws -> (shape: [Int], range: Range<Int>) {
            guard let e = header[name] as? [String: Any], e["dtype"] as? String == dtype, let shape = e["shape"] as? [Int],
                  let offsets = e["data_offsets"] as? [Int], offsets.count == 2, offsets[0] <= offsets[1],
                  base + offsets[1] <= bytes.count else { throw SampleCacheError.malformed(path, "no \(dtype) tensor '\(name)'") }
            return (shape, base + offsets[0] ..< base + offsets[1])
        }
        let images = try entry("images", "U8"), classes = try entry("classes", "I64")
        guard images.shape.count == 4, images.shape.reduce(1, *) == images.range.count,
              classes.shape == [images.shape[0]], classes.range.count == 8 * images.shape[0] else {
            throw SampleCacheError.malformed(path, "inconsistent shapes")
        }
        let requested = (0..<images.shape[0]).map { i -> Int in
            var v: UInt64 = 0
            for k in 0..<8 { v |= UInt64(bytes[classes.range.lowerBound + 8 * i + k]) << (8 * UInt64(k)) }
            return Int(Int64(bitPattern: v))
        }
        let metadata = header["__metadata__"] as? [String: String] ?? [:]
        guard metadata["format"] == format else { throw SampleCacheError.malformed(path, "format \(metadata["format"] ?? "none")") }
        return SampleSet(pixels: Array(bytes[images.range]), shape: images.shape, requestedClasses: requested, metadata: metadata)
    }
}
