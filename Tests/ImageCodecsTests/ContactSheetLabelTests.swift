import Foundation
import Testing
@testable import ImageCodecs

@Suite struct ContactSheetLabelTests {
    /// 12 distinct 28x28 images with no pure black or white pixel, so that text and background
    /// are told apart from them.
    func images() -> [RasterImage] {
        (0 ..< 12).map { i in
            var px = [UInt8](repeating: 0, count: 28 * 28)
            for p in px.indices { px[p] = UInt8(20 + (p * 7 + i * 31) % 200) }
            return RasterImage(width: 28, height: 28, channels: 1, pixels: px)
        }
    }

    /// The columns in x0..<x1 and rows in y0..<y1 of `image` that hold a sample equal to `ink`.
    func inkBox(_ image: RasterImage, x0: Int, x1: Int, y0: Int, y1: Int, ink: UInt8 = 0) -> (xs: ClosedRange<Int>, ys: ClosedRange<Int>)? {
        var xs: [Int] = [], ys: [Int] = []
        for y in y0 ..< y1 { for x in x0 ..< x1 where image[x, y].first == ink { xs.append(x); ys.append(y) } }
        guard let minX = xs.min(), let minY = ys.min() else { return nil }
        return (minX ... xs.max()!, minY ... ys.max()!)
    }

    @Test func labelsBesideRowsAndAHeaderAboveAnUnchangedGrid() throws {
        let imgs = images()
        let labels = ["T-shirt/top", "Trouser", "Bag"]
        let header = ["job 7 demo", "ddim, 50 steps (ddim50), classifier-free 3.0"]
        let plain = ContactSheet.make(imgs, columns: 4, padding: 2)
        let sheet = ContactSheet.make(imgs, columns: 4, padding: 2, header: header, rowLabels: labels)
        // Geometry from the font's metrics: 6 px per character (5 + 1 blank), 10 px per header line.
        let labelWidth = 2 + (11 * 6 - 1)           // gap + "T-shirt/top"
        let headerHeight = 2 + 2 * 10
        let headerWidth = 2 + (44 * 6 - 1) + 2        // the second header line is 44 characters
        #expect(sheet.height == headerHeight + plain.height)
        #expect(sheet.width == max(labelWidth + plain.width, headerWidth))
        // The grid is the unlabelled sheet, pixel for pixel.
        for y in 0 ..< plain.height {
            for x in 0 ..< plain.width {
                #expect(sheet[labelWidth + x, headerHeight + y] == plain[x, y], "grid pixel (\(x), \(y))")
            }
        }
        // Every image is where it was: image 5 is row 1, column 1.
        #expect(sheet[labelWidth + 2 + 30 + 3, headerHeight + 2 + 30 + 4].first == imgs[5][3, 4].first)
        // Each row's label is drawn in its band, left of the grid, exactly as wide as the text.
        for (r, label) in labels.enumerated() {
            let top = headerHeight + 2 + r * 30
            let box = try #require(inkBox(sheet, x0: 0, x1: labelWidth, y0: top, y1: top + 28), "row \(r) has no label")
            #expect(box.xs == 2 ... 2 + BitmapFont.width(of: label) - 1, "\(label): \(box.xs)")
            #expect(box.ys.lowerBound >= top + 10 && box.ys.upperBound < top + 28 - 9)
        }
        // The header's two lines are there, each as wide as its text.
        let line0 = try #require(inkBox(sheet, x0: 0, x1: sheet.width, y0: 0, y1: 12))
        #expect(line0.xs == 2 ... 2 + BitmapFont.width(of: header[0]) - 1)
        let line1 = try #require(inkBox(sheet, x0: 0, x1: sheet.width, y0: 12, y1: headerHeight))
        #expect(line1.xs == 2 ... 2 + BitmapFont.width(of: header[1]) - 1)
        // Nothing but background and ink outside the grid.
        for y in 0 ..< sheet.height {
            for x in 0 ..< sheet.width where x < labelWidth || y < headerHeight || x >= labelWidth + plain.width {
                #expect(sheet[x, y].first == 0 || sheet[x, y].first == 255)
            }
        }
    }

    @Test func glyphsAndScale() {
        // "L" is a vertical bar and a bottom bar: 7 + 4 ink pixels; at scale 3 each is a 3x3 block.
        var canvas = RasterImage(width: 20, height: 30, channels: 3, fill: 255)
        BitmapFont.draw("L", into: &canvas, x: 1, y: 2, scale: 3, color: [10, 20, 30])
        let ink = (0 ..< 600).filter { canvas.pixels[3 * $0] == 10 }
        #expect(ink.count == 11 * 9)
        #expect(Array(canvas[1, 2]) == [10, 20, 30] && Array(canvas[3, 22]) == [10, 20, 30])
        #expect(Array(canvas[15, 22]) == [10, 20, 30] && Array(canvas[16, 22]) == [255, 255, 255])
        #expect(Array(canvas[4, 2]) == [255, 255, 255])
        #expect(BitmapFont.width(of: "abc", scale: 2) == 34)
        // Descenders go below the baseline (row 7); a character without a glyph is a box.
        #expect(BitmapFont.glyph("g")[7] != 0 && BitmapFont.glyph("a")[7] == 0)
        #expect(BitmapFont.glyph("\u{e9}") == BitmapFont.missing)
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/.,:()" {
            #expect(BitmapFont.glyphs[c] != nil, "\(c)")
        }
        // Text running off the image is clipped, not a crash.
        var small = RasterImage(width: 4, height: 4, channels: 1, fill: 255)
        BitmapFont.draw("Wide text", into: &small, x: -3, y: -2, scale: 1, color: [0])
    }

    @Test func noLabelsIsThePlainSheet() {
        let imgs = images()
        #expect(ContactSheet.make(imgs, columns: 3, padding: 2, header: [], rowLabels: ["", ""]) ==
                ContactSheet.make(imgs, columns: 3, padding: 2))
    }
}
