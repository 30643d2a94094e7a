import Foundation
import ImageCodecs
import Testing

func gradient(width: Int, height: Int, channels: Int) -> RasterImage {
    var px = [UInt8](repeating: 0, count: width * height * channels)
    for y in 0 ..< height {
        for x in 0 ..< width {
            for c in 0 ..< channels { px[(y * width + x) * channels + c] = UInt8((x * 9 + y * 5 + c * 60) % 256) }
        }
    }
    return RasterImage(width: width, height: height, channels: channels, pixels: px)
}

func tempDir() -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("codecs-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

@Suite struct PNGTests {
    @Test(arguments: [1, 3]) func roundTripPixelsAndRecord(channels: Int) throws {
        let img = gradient(width: 28, height: 17, channels: channels)
        let record = EmbeddedRecord(json: #"{"job":1,"name":"Ünïcödé ✓"}"#, parameters: "class 1: Trouser\nSteps: 50, Seed: 42")
        let bytes = try PNGCodec.encode(img, record: record)
        #expect(ImageFormat.sniff(bytes) == .png)
        let decoded = try ImageFile.decode(bytes)
        #expect(decoded.format == .png)
        #expect(decoded.image == img)
        #expect(decoded.record.json == record.json)
        #expect(decoded.record.parameters == record.parameters)
    }

    @Test func corruptPNGIsAnError() throws {
        var bytes = try PNGCodec.encode(gradient(width: 8, height: 8, channels: 1), texts: [])
        bytes = Array(bytes.prefix(40))
        #expect(throws: ImageCodecError.self) { try PNGCodec.decode(bytes) }
        #expect(throws: ImageCodecError.self) { try PNGCodec.decode([0x89, 0x50, 0x4E, 0x47, 0, 0, 0, 0, 1, 2, 3]) }
    }

    @Test func rejectsBadArguments() {
        let rgba = RasterImage(width: 2, height: 2, channels: 4, fill: 1)
        #expect(throws: ImageCodecError.self) { try PNGCodec.encode(rgba, texts: []) }
        #expect(throws: ImageCodecError.self) { try PNGCodec.encode(gradient(width: 2, height: 2, channels: 1), texts: [("", "x")]) }
    }
}

@Suite struct JPEGTests {
    @Test(arguments: [1, 3]) func roundTripRecordAndPixels(channels: Int) throws {
        var px = [UInt8](repeating: 0, count: 32 * 24 * channels)
        for y in 0 ..< 24 {
            for x in 0 ..< 32 {
                for c in 0 ..< channels { px[(y * 32 + x) * channels + c] = UInt8(40 + x * 3 + y * 2 + c * 10) }
            }
        }
        let img = RasterImage(width: 32, height: 24, channels: channels, pixels: px)
        let record = EmbeddedRecord(json: #"{"seed":42,"text":"√ ok"}"#, parameters: "Steps: 10")
        let bytes = try JPEGCodec.encode(img, quality: 100, record: record)
        #expect(ImageFormat.sniff(bytes) == .jpeg)
        let decoded = try ImageFile.decode(bytes)
        #expect(decoded.format == .jpeg)
        #expect(decoded.record.json == record.json)
        #expect(decoded.record.parameters == record.parameters)
        #expect(decoded.image.width == 32 && decoded.image.height == 24 && decoded.image.channels == channels)
        let maxError = zip(decoded.image.pixels, img.pixels).map { abs(Int($0) - Int($1)) }.max() ?? 0
        #expect(maxError <= 8)
    }

    @Test func recordLargerThanOneSegmentIsSplit() throws {
        let big = "{\"pad\":\"" + String(repeating: "é", count: 70_000) + "\"}"
        let bytes = try JPEGCodec.encode(gradient(width: 8, height: 8, channels: 1), quality: 90,
                                         record: EmbeddedRecord(json: big, parameters: nil))
        let decoded = try JPEGCodec.decode(bytes)
        #expect(decoded.record.json == big)
    }

    @Test func corruptJPEGIsAnErrorNotExit() throws {
        let good = try JPEGCodec.encode(gradient(width: 16, height: 16, channels: 3), quality: 80, record: EmbeddedRecord())
        // Garbage after the SOI marker: libjpeg's default handler would exit() the process.
        #expect(throws: ImageCodecError.self) { try JPEGCodec.decode([0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x02, 0x13, 0x37, 0, 0]) }
        // Truncated data: a warning in libjpeg, an error in strict mode.
        #expect(throws: ImageCodecError.self) { try JPEGCodec.decode(Array(good.prefix(good.count / 2))) }
        #expect(throws: ImageCodecError.self) { try JPEGCodec.decode([0x00, 0x01]) }
        #expect(throws: ImageCodecError.self) { try JPEGCodec.encode(gradient(width: 4, height: 4, channels: 1), quality: 0, record: EmbeddedRecord()) }
        // Still alive, and a good file still decodes.
        #expect(try JPEGCodec.decode(good).image.width == 16)
    }
}

@Suite struct FileTests {
    @Test func atomicWriteLeavesNoTemporaries() throws {
        let dir = tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/a.png"
        try AtomicFile.write([1, 2, 3], to: path)
        try AtomicFile.write([4, 5, 6, 7], to: path)
        #expect(try FileBytes.read(path: path) == [4, 5, 6, 7])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["a.png"])
        // A failed write (missing directory) leaves nothing behind either.
        #expect(throws: ImageCodecError.self) { try AtomicFile.write([1], to: dir + "/missing/b.png") }
        // Leftovers from a crash are recognised and removed.
        _ = FileManager.default.createFile(atPath: dir + "/.b.png.tmp-1-2", contents: Data([1]))
        #expect(AtomicFile.removeTemporaries(in: dir) == [".b.png.tmp-1-2"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["a.png"])
    }

    @Test func upscaleAndContactSheet() {
        let img = gradient(width: 3, height: 2, channels: 1)
        let up = Upscale.nearest(img, factor: 4)
        #expect(up.width == 12 && up.height == 8)
        #expect(up[5, 7] == img[1, 1])
        let sheet = ContactSheet.make([img, img, gradient(width: 3, height: 2, channels: 3)], columns: 2, padding: 1)
        #expect(sheet.channels == 3)
        #expect(sheet.width == 2 * 3 + 3 * 1 && sheet.height == 2 * 2 + 3 * 1)
        #expect(Array(sheet[0, 0]) == [255, 255, 255])
        #expect(Array(sheet[1, 1]) == Array(repeating: img.pixels[0], count: 3))
    }
}
