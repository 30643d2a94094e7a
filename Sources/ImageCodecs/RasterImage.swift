/// An 8-bit image with interleaved samples, rows packed without padding.
public struct RasterImage: Sendable, Equatable, Hashable {
    public var width: Int
    public var height: Int
    /// 1 (grayscale) or 3 (RGB); decoders may also return 2 or 4 (with alpha).
    public var channels: Int
    /// `height * width * channels` samples, row-major.
    public var pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && channels >= 1, "invalid image geometry")
        precondition(pixels.count == width * height * channels,
                     "\(pixels.count) samples for \(width)x\(height)x\(channels)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// A blank image filled with `value` in every sample.
    public init(width: Int, height: Int, channels: Int, fill value: UInt8 = 0) {
        self.init(width: width, height: height, channels: channels,
                  pixels: [UInt8](repeating: value, count: width * height * channels))
    }

    /// The samples of pixel (x, y).
    public subscript(x: Int, y: Int) -> ArraySlice<UInt8> {
        let start = (y * width + x) * channels
        return pixels[start ..< start + channels]
    }

    /// The same image with 3 channels (grayscale replicated); RGB is returned as is.
    public func toRGB() -> RasterImage {
        switch channels {
        case 3: return self
        case 1:
            var out = [UInt8](repeating: 0, count: width * height * 3)
            for i in 0 ..< width * height {
                let v = pixels[i]
                out[3 * i] = v; out[3 * i + 1] = v; out[3 * i + 2] = v
            }
            return RasterImage(width: width, height: height, channels: 3, pixels: out)
        default:
            // Drop alpha; grayscale+alpha becomes gray replicated.
            var out = [UInt8](repeating: 0, count: width * height * 3)
            for i in 0 ..< width * height {
                let base = i * channels
                if channels == 2 {
                    out[3 * i] = pixels[base]; out[3 * i + 1] = pixels[base]; out[3 * i + 2] = pixels[base]
                } else {
                    out[3 * i] = pixels[base]; out[3 * i + 1] = pixels[base + 1]; out[3 * i + 2] = pixels[base + 2]
                }
            }
            return RasterImage(width: width, height: height, channels: 3, pixels: out)
        }
    }
}

/// Errors of encoding, decoding and writing images.
public enum ImageCodecError: Error, CustomStringConvertible, Sendable, Equatable {
    case encode(format: String, message: String)
    case decode(format: String, message: String)
    case unknownFormat(String)
    case invalidArgument(String)
    case io(path: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case let .encode(format, message): return "\(format) encoding failed: \(message)"
        case let .decode(format, message): return "\(format) decoding failed: \(message)"
        case let .unknownFormat(what): return "unknown image format: \(what)"
        case let .invalidArgument(message): return message
        case let .io(path, operation, code):
            return "\(operation) \(path): \(String(cString: strerror(code)))"
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
