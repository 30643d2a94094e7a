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

extension ContactSheet {
    /// The grid of `make(_:columns:padding:background:)` with text around it, in the built-in
    /// `BitmapFont`: `header` lines above the grid and `rowLabels[r]` to the left of grid row r,
    /// vertically centred on it, in `ink` on `background`, each font pixel `textScale` pixels wide.
    /// The grid itself is the unlabelled sheet, pixel for pixel, placed below the header and right
    /// of the widest label (the sheet widens for a longer header).
    public static func make(_ images: [RasterImage], columns: Int, padding: Int = 2, background: UInt8 = 255,
                            header: [String], rowLabels: [String], textScale: Int = 1, ink: UInt8 = 0) -> RasterImage {
        precondition(textScale >= 1, "invalid text scale")
        let grid = make(images, columns: columns, padding: padding, background: background)
        let labels = rowLabels.filter { !$0.isEmpty }
        if header.isEmpty && labels.isEmpty { return grid }
        let lineHeight = BitmapFont.lineHeight * textScale
        let glyphHeight = BitmapFont.glyphHeight * textScale
        let gap = max(padding, 2 * textScale)
        let headerHeight = header.isEmpty ? 0 : gap + header.count * lineHeight
        let labelWidth = labels.isEmpty ? 0 : gap + labels.map { BitmapFont.width(of: $0, scale: textScale) }.max()!
        let headerWidth = header.map { gap + BitmapFont.width(of: $0, scale: textScale) + gap }.max() ?? 0
        let w = max(labelWidth + grid.width, headerWidth), h = headerHeight + grid.height, c = grid.channels
        var sheet = RasterImage(width: w, height: h, channels: c, fill: background)
        for y in 0 ..< grid.height {
            let dst = ((headerHeight + y) * w + labelWidth) * c
            sheet.pixels.replaceSubrange(dst ..< dst + grid.width * c,
                                         with: grid.pixels[y * grid.width * c ..< (y + 1) * grid.width * c])
        }
        let color = [UInt8](repeating: ink, count: c)
        for (i, line) in header.enumerated() {
            BitmapFont.draw(line, into: &sheet, x: gap, y: gap + i * lineHeight, scale: textScale, color: color)
        }
        guard !images.isEmpty, !labels.isEmpty else { return sheet }
        let cellHeight = images.map(\.height).max()!
        let rows = (images.count + min(columns, images.count) - 1) / min(columns, images.count)
        for (r, label) in rowLabels.prefix(rows).enumerated() where !label.isEmpty {
            let top = headerHeight + padding + r * (cellHeight + padding)
            BitmapFont.draw(label, into: &sheet, x: gap, y: top + max(0, (cellHeight - glyphHeight) / 2),
                            scale: textScale, color: color)
        }
        return sheet
    }
}
