import Foundation
@testable import DiffusionEngine

/// A minimal safetensors reader for test fixtures (F32, F64 and I64 only).
struct FixtureReader {
    struct Entry { let dtype: String; let shape: [Int]; let range: Range<Int> }
    let data: Data
    let entries: [String: Entry]

    /// The fixture folder of the repository (Tests/Fixtures).
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    init(_ url: URL) throws {
        data = try Data(contentsOf: url)
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | (Int($1.element) << (8 * $1.offset)) }
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + headerLength))) as! [String: Any]
        var entries: [String: Entry] = [:]
        for (name, value) in header where name != "__metadata__" {
            let info = value as! [String: Any]
            let offsets = info["data_offsets"] as! [Int]
            entries[name] = Entry(dtype: info["dtype"] as! String, shape: info["shape"] as! [Int],
                                  range: (8 + headerLength + offsets[0])..<(8 + headerLength + offsets[1]))
        }
        self.entries = entries
    }

    func floats(_ name: String) -> [Float] {
        let e = entries[name]!
        precondition(e.dtype == "F32", "\(name) is \(e.dtype)")
        return data.subdata(in: e.range).withUnsafeBytes { raw in
            (0..<(e.range.count / 4)).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self).littleEndian) }
        }
    }

    func integers(_ name: String) -> [Int] {
        let e = entries[name]!
        precondition(e.dtype == "I64", "\(name) is \(e.dtype)")
        return data.subdata(in: e.range).withUnsafeBytes { raw in
            (0..<(e.range.count / 8)).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
        }
    }

    func shape(_ name: String) -> [Int] { entries[name]!.shape }

    /// Image `index` of a [N, ...] tensor as a batch of one.
    func image(_ name: String, _ index: Int) -> Tensor {
        let shape = self.shape(name)
        let per = shape.dropFirst().reduce(1, *)
        return Tensor(shape: [1] + shape.dropFirst(), values: Array(floats(name)[(index * per)..<((index + 1) * per)]))
    }
}
