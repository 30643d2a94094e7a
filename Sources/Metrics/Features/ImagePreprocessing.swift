import ImageCodecs

/// Turns 8-bit images of any size and channel count into the feature network's input:
/// `channels` x `height` x `width` floats, x = value / 127.5 - 1.
///
/// - Channels: gray is used as is; RGB becomes luma (0.299 R + 0.587 G + 0.114 B, ITU-R BT.601);
///   an alpha channel composites the image over black (the datasets' background). A 3-channel
///   network gets gray replicated (or RGB as is).
/// - Size: an image of another size is resampled with area averaging (each output pixel is the
///   mean of the input area it covers, partial pixels weighted), which inverts the daemon's
///   nearest-neighbour upscaled view copies exactly. Non-square images are stretched.
public struct ImagePreprocessing: Sendable, Equatable {
    /// The network's input geometry.
    public let channels: Int, height: Int, width: Int

    /// Preprocessing for a network taking `channels` x `height` x `width` inputs (channels 1 or 3).
    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.height = height
        self.width = width
    }

    /// The input values of `image`, channel-major (CHW), appended to `out`.
    public func append(_ image: RasterImage, to out: inout [Float]) throws {
        guard image.width > 0, image.height > 0 else { throw MetricsError.invalidInput("an empty image") }
        guard (1 ... 4).contains(image.channels) else { throw MetricsError.invalidInput("\(image.channels) channels (1 to 4 are understood)") }
        let planes = colourPlanes(image)
        for c in 0 ..< channels {
            let plane = planes[min(c, planes.count - 1)]
            let resized = Self.resample(plane, width: image.width, height: image.height, toWidth: width, toHeight: height)
            out.append(contentsOf: resized.map { Float($0 / 127.5 - 1) })
        }
    }

    /// The image as float planes in 0 ... 255 matching the network's channel count.
    func colourPlanes(_ image: RasterImage) -> [[Double]] {
        let n = image.width * image.height, k = image.channels
        let hasAlpha = k == 2 || k == 4
        let colour = hasAlpha ? k - 1 : k
        func alpha(_ i: Int) -> Double { hasAlpha ? Double(image.pixels[i * k + k - 1]) / 255 : 1 }
        if channels == 3 && colour == 3 {
            return (0 ..< 3).map { c in (0 ..< n).map { i in Double(image.pixels[i * k + c]) * alpha(i) } }
        }
        let gray: [Double] = (0 ..< n).map { i in
            let g = colour == 3
                ? 0.299 * Double(image.pixels[i * k]) + 0.587 * Double(image.pixels[i * k + 1]) + 0.114 * Double(image.pixels[i * k + 2])
                : Double(image.pixels[i * k])
            return g * alpha(i)
        }
        return [gray]
    }

    /// Area-average resampling of one plane (identity when the sizes agree).
    static func resample(_ plane: [Double], width: Int, height: Int, toWidth: Int, toHeight: Int) -> [Double] {
        if width == toWidth && height == toHeight { return plane }
        let wx = weights(from: width, to: toWidth), wy = weights(from: height, to: toHeight)
        var out = [Double](repeating: 0, count: toWidth * toHeight)
        for (oy, rows) in wy.enumerated() {
            for (ox, cols) in wx.enumerated() {
                var sum = 0.0, total = 0.0
                for (y, a) in rows { for (x, b) in cols { sum += plane[y * width + x] * a * b; total += a * b } }
                out[oy * toWidth + ox] = sum / total
            }
        }
        return out
    }

    /// For each output index, the input indices it covers with their overlap. When upscaling, an
    /// output pixel lies inside one input pixel (or straddles two): this is then bilinear-like
    /// box sampling.
    static func weights(from n: Int, to m: Int) -> [[(Int, Double)]] {
        let scale = Double(n) / Double(m)
        return (0 ..< m).map { o in
            let lo = Double(o) * scale, hi = Double(o + 1) * scale
            var list: [(Int, Double)] = []
            var i = Int(lo.rounded(.down))
            while Double(i) < hi && i < n {
                let overlap = min(hi, Double(i + 1)) - max(lo, Double(i))
                if overlap > 1e-12 { list.append((i, overlap)) }
                i += 1
            }
            return list
        }
    }
}
