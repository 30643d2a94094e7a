import CZlib
import Foundation
import ImageCodecs

/// Reads the images a metric is computed on: IDX files (MNIST's format, optionally gzipped) and
/// folders of PNG / JPEG files.
public enum ImageSources {
    /// Images of an IDX file of unsigned bytes [N, H, W] or [N, H, W, C] (gzip-compressed or not).
    public static func readIDXImages(path: String) throws -> [RasterImage] {
        let (dims, bytes) = try readIDX(path: path)
        guard dims.count == 3 || dims.count == 4, dims.allSatisfy({ $0 > 0 }) else {
            throw MetricsError.unreadableImage(path: path, reason: "IDX dimensions \(dims) are not images [N, H, W] or [N, H, W, C]")
        }
        let n = dims[0], h = dims[1], w = dims[2], c = dims.count == 4 ? dims[3] : 1
        let size = h * w * c
        return (0 ..< n).map { i in RasterImage(width: w, height: h, channels: c, pixels: Array(bytes[i * size ..< (i + 1) * size])) }
    }

    /// Labels of an IDX file of unsigned bytes [N].
    public static func readIDXLabels(path: String) throws -> [Int] {
        let (dims, bytes) = try readIDX(path: path)
        guard dims.count == 1 else { throw MetricsError.unreadableImage(path: path, reason: "IDX dimensions \(dims) are not labels [N]") }
        return bytes.map(Int.init)
    }

    /// Dimensions and payload of an unsigned-byte IDX file.
    static func readIDX(path: String) throws -> (dims: [Int], bytes: [UInt8]) {
        guard var data = FileManager.default.contents(atPath: path).map([UInt8].init) else {
            throw MetricsError.unreadableImage(path: path, reason: "cannot read the file")
        }
        if data.count >= 2 && data[0] == 0x1f && data[1] == 0x8b { data = try gunzip(data, path: path) }
        guard data.count >= 4, data[0] == 0, data[1] == 0 else { throw MetricsError.unreadableImage(path: path, reason: "not an IDX file (bad magic number)") }
        guard data[2] == 0x08 else { throw MetricsError.unreadableImage(path: path, reason: String(format: "IDX element type 0x%02x (only unsigned bytes, 0x08, are read)", data[2])) }
        let ndim = Int(data[3])
        guard ndim >= 1, data.count >= 4 + 4 * ndim else { throw MetricsError.unreadableImage(path: path, reason: "truncated IDX header") }
        let dims = (0 ..< ndim).map { d in (0 ..< 4).reduce(0) { $0 << 8 | Int(data[4 + 4 * d + $1]) } }
        let count = dims.reduce(1, *), start = 4 + 4 * ndim
        guard data.count - start == count else {
            throw MetricsError.unreadableImage(path: path, reason: "IDX header announces \(count) bytes of data, the file has \(data.count - start)")
        }
        return (dims, Array(data[start...]))
    }

    /// Decompresses a gzip stream.
    static func gunzip(_ input: [UInt8], path: String) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw MetricsError.unreadableImage(path: path, reason: "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8](), chunk = [UInt8](repeating: 0, count: 1 << 20)
        var status = Z_OK
        try input.withUnsafeBufferPointer { inBuf in
            stream.next_in = UnsafeMutablePointer(mutating: inBuf.baseAddress)
            stream.avail_in = UInt32(inBuf.count)
            repeat {
                try chunk.withUnsafeMutableBufferPointer { outBuf in
                    stream.next_out = outBuf.baseAddress
                    stream.avail_out = UInt32(outBuf.count)
                    status = inflate(&stream, Z_NO_FLUSH)
                    guard status == Z_OK || status == Z_STREAM_END else {
                        throw MetricsError.unreadableImage(path: path, reason: "corrupt gzip data (zlib status \(status))")
                    }
                    output.append(contentsOf: outBuf[0 ..< outBuf.count - Int(stream.avail_out)])
                }
                if status == Z_OK && stream.avail_in == 0 && stream.avail_out != 0 {
                    throw MetricsError.unreadableImage(path: path, reason: "truncated gzip data")
                }
            } while status != Z_STREAM_END
        }
        return output
    }

    /// An image file of a folder, decoded, with the class its generation record names (if any).
    public struct LabelledImage: Sendable {
        /// The file.
        public var path: String
        /// The pixels.
        public var image: RasterImage
        /// The class the image was generated for (from its embedded diffusiond record).
        public var requestedClass: Int?
    }

    /// The PNG and JPEG files directly inside `directory` (not its subfolders such as `view/`),
    /// in name order, except the daemon's `contact-sheet.png`.
    public static func imageFiles(in directory: String) throws -> [String] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else {
            throw MetricsError.invalidInput("cannot list the folder \(directory)")
        }
        return names.sorted().filter { name in
            let ext = (name as NSString).pathExtension.lowercased()
            guard ["png", "jpg", "jpeg"].contains(ext), name != "contact-sheet.png", !name.hasPrefix(".") else { return false }
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: directory + "/" + name, isDirectory: &isDirectory) && !isDirectory.boolValue
        }.map { directory + "/" + $0 }
    }

    /// Decodes image files; the requested class comes from the `class` field of an embedded
    /// diffusiond record, when there is one.
    public static func readImages(paths: [String]) throws -> [LabelledImage] {
        try paths.map { path in
            let decoded: DecodedImageFile
            do { decoded = try ImageFile.read(path: path) } catch {
                throw MetricsError.unreadableImage(path: path, reason: "\(error)")
            }
            return LabelledImage(path: path, image: decoded.image, requestedClass: requestedClass(decoded.record.json))
        }
    }

    /// The class index of a diffusiond generation record: its `class` field, `{"index": i, "name": …}`
    /// (or a bare integer); nil for unconditional images.
    static func requestedClass(_ json: String?) -> Int? {
        guard let json, let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else { return nil }
        if let c = object["class"] as? [String: Any] { return c["index"] as? Int }
        return object["class"] as? Int
    }
}
