/// Nearest-neighbour enlargement, for looking at 28x28 samples.
public enum Upscale {
    /// Repeats every pixel `factor` times in each direction.
    public static func nearest(_ image: RasterImage, factor: Int) -> RasterImage {
        precondition(factor >= 1, "upscale factor must be at least 1")
        if factor == 1 { return image }
        let w = image.width * factor, h = image.height * factor, c = image.channels
        var out = [UInt8](repeating: 0, count: w * h * c)
        for y in 0 ..< h {
            let sy = y / factor
            for x in 0 ..< w {
                let src = (sy * image.width + x / factor) * c
                let dst = (y * w + x) * c
                for k in 0 ..< c { out[dst + k] = image.pixels[src + k] }
            }
        }
        return RasterImage(width: w, height: h, channels: c, pixels: out)
    }
}

/// A grid of equally sized images with a margin between them.
public enum ContactSheet {
    /// Lays `images` out row by row, `columns` to a row, `padding` pixels apart
    /// (and around), on a background of `background`. Images smaller than the
    /// largest are placed at the top left of their cell; grayscale images are
    /// promoted to RGB when any image is RGB.
    public static func make(_ images: [RasterImage], columns: Int, padding: Int = 2,
                            background: UInt8 = 255) -> RasterImage {
        precondition(columns >= 1 && padding >= 0, "invalid grid")
        guard !images.isEmpty else { return RasterImage(width: 1, height: 1, channels: 1, fill: background) }
        let rgb = images.contains { $0.channels != 1 }
        let items = rgb ? images.map { $0.toRGB() } : images
        let c = rgb ? 3 : 1
        let cw = items.map(\.width).max()!, ch = items.map(\.height).max()!
        let cols = min(columns, items.count)
        let rows = (items.count + cols - 1) / cols
        let w = cols * cw + (cols + 1) * padding
        let h = rows * ch + (rows + 1) * padding
        var out = [UInt8](repeating: background, count: w * h * c)
        for (i, img) in items.enumerated() {
            let ox = padding + (i % cols) * (cw + padding)
            let oy = padding + (i / cols) * (ch + padding)
            for y in 0 ..< img.height {
                let src = y * img.width * c
                let dst = ((oy + y) * w + ox) * c
                out.replaceSubrange(dst ..< dst + img.width * c, with: img.pixels[src ..< src + img.width * c])
            }
        }
        return RasterImage(width: w, height: h, channels: c, pixels: out)
    }
}
