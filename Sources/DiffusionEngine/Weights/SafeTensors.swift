import Foundation

/// A parsed safetensors file: a u64 little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets}}` and raw little-endian tensor data.
public struct SafeTensors: Sendable {
    /// Element types the engine reads.
    public enum DType: String, Sendable {
        case f32 = "F32", f64 = "F64", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32"

        /// Bytes per element.
        public var size: Int {
            switch self {
            case .f32, .i32: 4
            case .f64, .i64: 8
            case .f16, .bf16: 2
            }
        }
    }

    /// One tensor's header entry.
    public struct Entry: Sendable {
        /// Element type.
        public let dtype: DType
        /// Dimensions, outermost first.
        public let shape: [Int]
        /// Byte range inside the data section.
        public let byteRange: Range<Int>
        /// Number of elements.
        public var count: Int { shape.reduce(1, *) }
    }

    /// Entries by tensor name.
    public let entries: [String: Entry]
    /// The optional `__metadata__` string map.
    public let metadata: [String: String]
    private let payload: Data

    /// Tensor names in sorted order.
    public var names: [String] { entries.keys.sorted() }

    /// Parses safetensors bytes, validating the header and every tensor's byte range.
    public init(bytes: Data) throws {
        let bytes = Data(bytes)   // rebase indices at 0
        guard bytes.count >= 8 else { throw EngineError.malformedSafeTensors("file shorter than 8 bytes") }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw EngineError.malformedSafeTensors("header length \(headerLength) exceeds file size \(bytes.count)")
        }
        let headerEnd = 8 + Int(headerLength)
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<headerEnd)) } catch {
            throw EngineError.malformedSafeTensors("header is not JSON: \(error)")
        }
        guard let header = json as? [String: Any] else { throw EngineError.malformedSafeTensors("header is not a JSON object") }
        payload = bytes.subdata(in: headerEnd..<bytes.count)
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                if let m = value as? [String: Any] { for (k, v) in m { metadata[k] = "\(v)" } }
                continue
            }
            guard let info = value as? [String: Any], let dtypeName = info["dtype"] as? String,
                  let shapeAny = info["shape"] as? [Any], let offsets = info["data_offsets"] as? [Any], offsets.count == 2
            else { throw EngineError.malformedSafeTensors("bad header entry for '\(name)'") }
            guard let dtype = DType(rawValue: dtypeName) else { throw EngineError.unsupportedDType(name: name, dtype: dtypeName) }
            let shape = try shapeAny.map { v -> Int in
                guard let n = (v as? NSNumber)?.intValue, n >= 0 else { throw EngineError.malformedSafeTensors("bad shape for '\(name)'") }
                return n
            }
            guard let lo = (offsets[0] as? NSNumber)?.intValue, let hi = (offsets[1] as? NSNumber)?.intValue,
                  lo >= 0, lo <= hi, hi <= payload.count
            else { throw EngineError.malformedSafeTensors("bad data_offsets for '\(name)'") }
            guard hi - lo == shape.reduce(1, *) * dtype.size else {
                throw EngineError.malformedSafeTensors("'\(name)': \(hi - lo) bytes for shape \(shape) of \(dtypeName)")
            }
            entries[name] = Entry(dtype: dtype, shape: shape, byteRange: lo..<hi)
        }
        self.entries = entries
        self.metadata = metadata
    }

    private func entry(_ name: String) throws -> Entry {
        guard let e = entries[name] else { throw EngineError.missingWeight(key: name, expectedShape: []) }
        return e
    }

    /// The named tensor's elements converted to Double.
    public func doubles(_ name: String) throws -> [Double] {
        let e = try entry(name)
        return payload.withUnsafeBytes { raw -> [Double] in
            let base = raw.baseAddress! + e.byteRange.lowerBound
            return (0..<e.count).map { i -> Double in
                switch e.dtype {
                case .f32: Double(Float(bitPattern: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian))
                case .f64: Double(bitPattern: base.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian)
                case .f16: Double(Float(Float16(bitPattern: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)))
                case .bf16: Double(Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16))
                case .i64: Double(Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                case .i32: Double(Int32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                }
            }
        }
    }

    /// The named tensor's elements converted to Float.
    public func floats(_ name: String) throws -> [Float] {
        let e = try entry(name)
        if e.dtype == .f32 {
            return payload.withUnsafeBytes { raw in
                let base = raw.baseAddress! + e.byteRange.lowerBound
                return (0..<e.count).map { Float(bitPattern: base.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self).littleEndian) }
            }
        }
        return try doubles(name).map { Float($0) }
    }

    /// The named tensor's elements as integers (integer dtypes exactly, floats truncated).
    public func integers(_ name: String) throws -> [Int] {
        let e = try entry(name)
        if e.dtype == .i64 {
            return payload.withUnsafeBytes { raw in
                let base = raw.baseAddress! + e.byteRange.lowerBound
                return (0..<e.count).map { Int(Int64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) }
            }
        }
        return try doubles(name).map { Int($0) }
    }

    /// The named tensor as a float32 engine tensor.
    public func tensor(_ name: String) throws -> Tensor {
        let e = try entry(name)
        return Tensor(shape: e.shape, values: try floats(name))
    }

    /// Every tensor converted to float32, by name (the form networks are built from).
    public func tensors() throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for name in entries.keys { out[name] = try tensor(name) }
        return out
    }

    /// Serialises float32 tensors to safetensors bytes (names sorted, data in that order).
    public static func serialize(_ tensors: [String: Tensor], metadata: [String: String] = [:]) -> Data {
        SafeTensorsValue.encode(tensors.mapValues { .f32($0.array, shape: $0.shape) }, metadata: metadata)
    }
}

/// A tensor to write into a safetensors file: its elements in one of the supported dtypes.
public enum SafeTensorsValue: Sendable {
    case f32([Float], shape: [Int])
    case f64([Double], shape: [Int])
    case i64([Int], shape: [Int])

    var dtype: String {
        switch self { case .f32: "F32"; case .f64: "F64"; case .i64: "I64" }
    }
    var shape: [Int] {
        switch self { case .f32(_, let s), .f64(_, let s), .i64(_, let s): s }
    }
    var byteCount: Int {
        switch self { case .f32(let v, _): 4 * v.count; case .f64(let v, _): 8 * v.count; case .i64(let v, _): 8 * v.count }
    }
    func append(to out: inout Data) {
        switch self {
        case .f32(let v, _): for x in v { var b = x.bitPattern.littleEndian; withUnsafeBytes(of: &b) { out.append(contentsOf: $0) } }
        case .f64(let v, _): for x in v { var b = x.bitPattern.littleEndian; withUnsafeBytes(of: &b) { out.append(contentsOf: $0) } }
        case .i64(let v, _): for x in v { var b = Int64(x).littleEndian; withUnsafeBytes(of: &b) { out.append(contentsOf: $0) } }
        }
    }

    /// Safetensors bytes of `tensors` (names sorted, data in that order, header padded to 8 bytes).
    public static func encode(_ tensors: [String: SafeTensorsValue], metadata: [String: String] = [:]) -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            ensure(t.byteCount == t.shape.reduce(1, *) * (t.dtype == "F32" ? 4 : 8), "'\(name)': elements do not match shape \(t.shape)")
            header[name] = ["dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + t.byteCount]] as [String: Any]
            offset += t.byteCount
        }
        var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (json.count + 8) % 8 != 0 { json.append(0x20) }
        var out = Data()
        out.reserveCapacity(8 + json.count + offset)
        var length = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &length) { out.append(contentsOf: $0) }
        out.append(json)
        for name in names { tensors[name]!.append(to: &out) }
        return out
    }
}
