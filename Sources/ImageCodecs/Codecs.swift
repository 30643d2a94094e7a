import CImageCodecs
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The on-disk formats the daemon writes.
public enum ImageFormat: String, Codable, Sendable, CaseIterable {
    case png
    case jpeg

    /// The file extension, without the dot.
    public var fileExtension: String { self == .png ? "png" : "jpg" }

    /// Guesses the format from the first bytes of a file.
    public static func sniff(_ bytes: [UInt8]) -> ImageFormat? {
        if bytes.count >= 8, bytes[0 ..< 8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) {
            return .png
        }
        if bytes.count >= 3, bytes[0] == 0xFF, bytes[1] == 0xD8, bytes[2] == 0xFF { return .jpeg }
        return nil
    }
}

/// The text a generated image carries about its own generation.
public struct EmbeddedRecord: Sendable, Equatable {
    /// The JSON generation record (PNG iTXt key `diffusiond`; JPEG COM segments).
    public var json: String?
    /// A1111-style human-readable parameters (PNG iTXt key `parameters`; JPEG COM segment).
    public var parameters: String?
    /// Every other text entry found (PNG keyword -> text).
    public var other: [String: String]

    public init(json: String? = nil, parameters: String? = nil, other: [String: String] = [:]) {
        self.json = json
        self.parameters = parameters
        self.other = other
    }
}

/// PNG with iTXt chunks (libpng classic API behind a setjmp shim).
public enum PNGCodec {
    /// The iTXt keyword of the JSON record.
    public static let recordKey = "diffusiond"
    /// The iTXt keyword of the human-readable parameters (as A1111 writes them).
    public static let parametersKey = "parameters"

    /// Encodes an 8-bit grayscale or RGB image with the given UTF-8 text chunks (iTXt, uncompressed).
    public static func encode(_ image: RasterImage, texts: [(key: String, value: String)]) throws -> [UInt8] {
        guard image.channels == 1 || image.channels == 3 else {
            throw ImageCodecError.invalidArgument("PNG output needs 1 or 3 channels, got \(image.channels)")
        }
        guard image.width > 0, image.height > 0 else {
            throw ImageCodecError.invalidArgument("PNG output needs a non-empty image")
        }
        for t in texts {
            let k = Array(t.key.utf8)
            guard (1 ... 79).contains(k.count), k.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }),
                  !t.value.utf8.contains(0) else {
                throw ImageCodecError.invalidArgument("invalid PNG text keyword or value for key \(t.key)")
            }
        }
        var buffer = cic_buffer()
        var err = [CChar](repeating: 0, count: 256)
        let keys = texts.map { strdup($0.key) }
        let values = texts.map { strdup($0.value) }
        defer {
            keys.forEach { free($0) }
            values.forEach { free($0) }
            cic_buffer_free(&buffer)
        }
        var keyPointers: [UnsafePointer<CChar>?] = keys.map { UnsafePointer($0) }
        var valuePointers: [UnsafePointer<CChar>?] = values.map { UnsafePointer($0) }
        let rc = image.pixels.withUnsafeBufferPointer { px in
            keyPointers.withUnsafeMutableBufferPointer { kp in
                valuePointers.withUnsafeMutableBufferPointer { vp in
                    cic_png_encode(px.baseAddress, Int32(image.width), Int32(image.height), Int32(image.channels),
                                   kp.baseAddress, vp.baseAddress, Int32(texts.count), &buffer, &err, err.count)
                }
            }
        }
        guard rc == 0 else { throw ImageCodecError.encode(format: "PNG", message: String(cString: err)) }
        return Array(UnsafeBufferPointer(start: buffer.data, count: buffer.size))
    }

    /// Encodes with the record under `diffusiond` and the parameters under `parameters`.
    public static func encode(_ image: RasterImage, record: EmbeddedRecord) throws -> [UInt8] {
        var texts: [(key: String, value: String)] = []
        if let json = record.json { texts.append((recordKey, json)) }
        if let p = record.parameters { texts.append((parametersKey, p)) }
        for (k, v) in record.other.sorted(by: { $0.key < $1.key }) { texts.append((k, v)) }
        return try encode(image, texts: texts)
    }

    /// Decodes pixels and every text chunk.
    public static func decode(_ bytes: [UInt8]) throws -> (image: RasterImage, texts: [String: String]) {
        var img = cic_image()
        var err = [CChar](repeating: 0, count: 256)
        let rc = bytes.withUnsafeBufferPointer { cic_png_decode($0.baseAddress, $0.count, &img, &err, err.count) }
        guard rc == 0 else { throw ImageCodecError.decode(format: "PNG", message: String(cString: err)) }
        defer { cic_image_free(&img) }
        let count = Int(img.width) * Int(img.height) * Int(img.channels)
        let image = RasterImage(width: Int(img.width), height: Int(img.height), channels: Int(img.channels),
                                pixels: Array(UnsafeBufferPointer(start: img.pixels, count: count)))
        var texts: [String: String] = [:]
        for i in 0 ..< Int(img.text_count) {
            let t = img.texts[i]
            guard let key = t.key else { continue }
            let value = String(decoding: UnsafeBufferPointer(start: t.value, count: t.length), as: UTF8.self)
            texts[String(cString: key)] = value
        }
        return (image, texts)
    }
}

/// Baseline JPEG; the record travels in COM segments (each at most 65,533 bytes).
public enum JPEGCodec {
    static let comMarker: Int32 = 0xFE
    static let recordPrefix = "diffusiond:"
    static let parametersPrefix = "parameters:"
    /// Room for the record in one segment after its `diffusiond:i/n:` prefix.
    static let chunkSize = 65_000

    /// Encodes with the record split over as many COM segments as it needs
    /// (`diffusiond:<i>/<n>:<bytes>`), and the parameters in one more (`parameters:<text>`, truncated to fit).
    public static func encode(_ image: RasterImage, quality: Int, record: EmbeddedRecord) throws -> [UInt8] {
        guard image.channels == 1 || image.channels == 3 else {
            throw ImageCodecError.invalidArgument("JPEG output needs 1 or 3 channels, got \(image.channels)")
        }
        guard (1 ... 100).contains(quality) else {
            throw ImageCodecError.invalidArgument("JPEG quality must be between 1 and 100, got \(quality)")
        }
        var segments: [[UInt8]] = []
        if let json = record.json {
            let bytes = Array(json.utf8)
            let n = max(1, (bytes.count + chunkSize - 1) / chunkSize)
            for i in 0 ..< n {
                let chunk = bytes[min(i * chunkSize, bytes.count) ..< min((i + 1) * chunkSize, bytes.count)]
                segments.append(Array("\(recordPrefix)\(i + 1)/\(n):".utf8) + chunk)
            }
        }
        if let p = record.parameters {
            var bytes = Array((parametersPrefix + p).utf8)
            if bytes.count > 65_533 { bytes = Array(bytes.prefix(65_533)) }
            segments.append(bytes)
        }
        var markers = [Int32](repeating: comMarker, count: segments.count)
        var lengths = segments.map { $0.count }
        let copies: [UnsafeMutablePointer<UInt8>] = segments.map { seg in
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: max(seg.count, 1))
            p.initialize(from: seg, count: seg.count)
            return p
        }
        defer { copies.forEach { $0.deallocate() } }
        var payloads = copies.map { Optional(UnsafePointer($0)) }
        var buffer = cic_buffer()
        defer { cic_buffer_free(&buffer) }
        var err = [CChar](repeating: 0, count: 256)
        let rc = image.pixels.withUnsafeBufferPointer { px in
            markers.withUnsafeMutableBufferPointer { mk in
                payloads.withUnsafeMutableBufferPointer { pl in
                    lengths.withUnsafeMutableBufferPointer { ln in
                        cic_jpeg_encode(px.baseAddress, Int32(image.width), Int32(image.height), Int32(image.channels),
                                        Int32(quality), mk.baseAddress, pl.baseAddress, ln.baseAddress,
                                        Int32(segments.count), &buffer, &err, err.count)
                    }
                }
            }
        }
        guard rc == 0 else { throw ImageCodecError.encode(format: "JPEG", message: String(cString: err)) }
        return Array(UnsafeBufferPointer(start: buffer.data, count: buffer.size))
    }

    /// Decodes pixels (grayscale or RGB) and the record. With `strict` (the default),
    /// corrupt or truncated data is an error rather than a warning.
    public static func decode(_ bytes: [UInt8], strict: Bool = true) throws -> (image: RasterImage, record: EmbeddedRecord) {
        var img = cic_image()
        var err = [CChar](repeating: 0, count: 256)
        let rc = bytes.withUnsafeBufferPointer {
            cic_jpeg_decode($0.baseAddress, $0.count, strict ? 1 : 0, &img, &err, err.count)
        }
        guard rc == 0 else { throw ImageCodecError.decode(format: "JPEG", message: String(cString: err)) }
        defer { cic_image_free(&img) }
        let count = Int(img.width) * Int(img.height) * Int(img.channels)
        let image = RasterImage(width: Int(img.width), height: Int(img.height), channels: Int(img.channels),
                                pixels: Array(UnsafeBufferPointer(start: img.pixels, count: count)))
        var chunks: [Int: [UInt8]] = [:]
        var total = 0
        var record = EmbeddedRecord()
        for i in 0 ..< Int(img.text_count) {
            let t = img.texts[i]
            guard t.marker == comMarker else { continue }
            let payload = Array(UnsafeBufferPointer(start: t.value, count: t.length))
            if payload.starts(with: Array(recordPrefix.utf8)) {
                // diffusiond:<i>/<n>:<bytes>
                let rest = payload.dropFirst(recordPrefix.utf8.count)
                guard let colon = rest.firstIndex(of: UInt8(ascii: ":")) else { continue }
                let header = String(decoding: rest[rest.startIndex ..< colon], as: UTF8.self).split(separator: "/")
                guard header.count == 2, let idx = Int(header[0]), let n = Int(header[1]) else { continue }
                chunks[idx] = Array(rest[(colon + 1)...])
                total = n
            } else if payload.starts(with: Array(parametersPrefix.utf8)) {
                record.parameters = String(decoding: payload.dropFirst(parametersPrefix.utf8.count), as: UTF8.self)
            }
        }
        if total > 0, (1 ... total).allSatisfy({ chunks[$0] != nil }) {
            let bytes = (1 ... total).flatMap { chunks[$0]! }
            record.json = String(decoding: bytes, as: UTF8.self)
        }
        return (image, record)
    }
}

/// A decoded image file of either format.
public struct DecodedImageFile: Sendable {
    public var format: ImageFormat
    public var image: RasterImage
    public var record: EmbeddedRecord
}

/// Format-independent entry points.
public enum ImageFile {
    /// Encodes an image in the given format with its record.
    public static func encode(_ image: RasterImage, format: ImageFormat, quality: Int = 95,
                              record: EmbeddedRecord) throws -> [UInt8] {
        switch format {
        case .png: return try PNGCodec.encode(image, record: record)
        case .jpeg: return try JPEGCodec.encode(image, quality: quality, record: record)
        }
    }

    /// Decodes bytes of either format (sniffed from the signature).
    public static func decode(_ bytes: [UInt8]) throws -> DecodedImageFile {
        switch ImageFormat.sniff(bytes) {
        case .png:
            let (image, texts) = try PNGCodec.decode(bytes)
            var other = texts
            let json = other.removeValue(forKey: PNGCodec.recordKey)
            let params = other.removeValue(forKey: PNGCodec.parametersKey)
            return DecodedImageFile(format: .png, image: image,
                                    record: EmbeddedRecord(json: json, parameters: params, other: other))
        case .jpeg:
            let (image, record) = try JPEGCodec.decode(bytes)
            return DecodedImageFile(format: .jpeg, image: image, record: record)
        case nil:
            throw ImageCodecError.unknownFormat("neither a PNG nor a JPEG signature")
        }
    }

    /// Reads and decodes a file.
    public static func read(path: String) throws -> DecodedImageFile {
        try decode(FileBytes.read(path: path))
    }

    /// The library versions, for the environment record.
    public static var libraryVersions: [String: String] {
        ["libpng": String(cString: cic_png_version()), "libjpeg": String(cic_jpeg_version())]
    }
}
