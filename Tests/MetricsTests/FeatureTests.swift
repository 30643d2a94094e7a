import DiffusionEngine
import Foundation
import ImageCodecs
import Metrics
import Testing

/// Features of image files and of the real test set against PyTorch, and the data floor.
@Suite struct FeatureTests {
    /// PNG/JPEG files in several sizes and channel layouts (training/make_metrics_fixtures.py):
    /// decoded and preprocessed here, their features equal PyTorch's on the numpy-preprocessed pixels.
    @Test func imageFilesMatchPyTorch() throws {
        let folder = MetricsFixtures.folder.appendingPathComponent("images")
        let names = try String(contentsOf: folder.appendingPathComponent("files.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        #expect(names.count == 36)
        let images = try ImageSources.readImages(paths: names.map { folder.appendingPathComponent($0).path })
        #expect(Set(images.map(\.image.channels)) == [1, 2, 3, 4])
        let extracted = try MetricsFixtures.evaluator.extractor.features(of: images.map(\.image))
        let expected = try MetricsFixtures.safeTensors("images/expected.safetensors")
        let reference = try expected.floats("features"), logits = try expected.tensor("logits")
        let scale = reference.map { abs($0) }.max()!
        var worst = 0.0
        for (a, b) in zip(extracted.features.values, reference) { worst = max(worst, Double(abs(a - b)) / Double(scale)) }
        #expect(worst < 1e-4, "worst feature difference \(worst) of the largest feature")
        for i in 0 ..< names.count {
            let row = (0 ..< 10).map { logits.data[i * 10 + $0] }
            #expect(extracted.predictedClasses[i] == row.indices.max { row[$0] < row[$1] }!, "\(names[i])")
        }
    }

    /// The first 512 test images: the Swift features equal the PyTorch features stored in the
    /// bundle's floor set (same images, in the floor's order).
    @Test func testSetFeaturesMatchTheBundle() throws {
        let st = try SafeTensors(bytes: try Data(contentsOf: MetricsFixtures.featuresBundle.appendingPathComponent("reference.safetensors")))
        let order = try st.integers("floor.indices").prefix(512)
        let stored = try st.floats("floor.features")
        let images = order.map { MetricsFixtures.testImages[$0] }
        let extracted = try MetricsFixtures.evaluator.extractor.features(of: images)
        let scale = stored.prefix(512 * 128).map { abs($0) }.max()!
        var worst: Float = 0
        for i in 0 ..< 512 * 128 { worst = max(worst, abs(extracted.features.values[i] - stored[i]) / scale) }
        #expect(worst < 1e-4, "worst \(worst)")
    }

    /// The FID of the real test set against the training reference, features computed here from
    /// the IDX file, reproduces the data floor the bundle records (N = 1,000 in the floor's order, and
    /// all 10,000).
    @Test func dataFloorReproduces() throws {
        let info = try FeaturesBundleInfo(bundle: MetricsFixtures.evaluator.extractor.bundle)
        let recorded = try #require(info.reference.dataFloorFID)
        let st = try SafeTensors(bytes: try Data(contentsOf: MetricsFixtures.featuresBundle.appendingPathComponent("reference.safetensors")))
        let order = try st.integers("floor.indices")
        let images = order.map { MetricsFixtures.testImages[$0] }
        let all = try MetricsFixtures.evaluator.extractor.features(of: images).features
        for n in [1000, 10000] {
            let fid = try FrechetDistance.between(try FeatureStatistics(all.prefix(n)), MetricsFixtures.evaluator.reference.all)
            let want = try #require(recorded["\(n)"])
            #expect(MetricsFixtures.relative(fid, want) < 1e-4, "N = \(n): FID \(fid), bundle records \(want)")
            print("data floor N = \(n): from the IDX file \(fid), recorded \(want)")
            // The evaluator's own floor (from the stored PyTorch features) agrees too, to the round-off
            // of a tiny FID: the square roots of near-zero eigenvalues carry ~sqrt(eps * |S|) ≈ 1e-7.
            let stored = try #require(try MetricsFixtures.evaluator.dataFloorFID(n: n))
            #expect(abs(stored - want) < 1e-6, "N = \(n): floor from the stored features \(stored), bundle records \(want), from the IDX \(fid)")
        }
    }

    /// Controlled corruptions of 1,000 real test images raise FID monotonically with their strength.
    @Test func corruptionsRaiseFIDMonotonically() throws {
        let clean = Array(MetricsFixtures.testImages.prefix(1000))
        func fid(_ images: [RasterImage]) throws -> Double {
            let f = try MetricsFixtures.evaluator.extractor.features(of: images).features
            return try FrechetDistance.between(try FeatureStatistics(f), MetricsFixtures.evaluator.reference.all)
        }
        var rng = SubsetSampler(seed: 42)
        func gaussian() -> Double {
            let u1 = (Double(rng.next() >> 11) + 0.5) / 9007199254740992, u2 = Double(rng.next() >> 11) / 9007199254740992
            return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
        }
        let noiseLevels = [0.0, 8, 16, 32, 64]
        let noisy = try noiseLevels.map { sigma in
            try fid(clean.map { im in
                RasterImage(width: 28, height: 28, channels: 1, pixels: im.pixels.map { UInt8(max(0, min(255, (Double($0) + sigma * gaussian()).rounded()))) })
            })
        }
        for i in 1 ..< noisy.count { #expect(noisy[i] > noisy[i - 1], "noise σ \(noiseLevels[i]): FID \(noisy)") }
        let blurred = try [0, 1, 2, 3].map { radius in try fid(clean.map { boxBlur($0, radius: radius) }) }
        for i in 1 ..< blurred.count { #expect(blurred[i] > blurred[i - 1], "blur radius \(i): FID \(blurred)") }
        #expect(noisy[0] == blurred[0])
    }

    /// A (2r + 1)² box blur with edge clamping.
    func boxBlur(_ im: RasterImage, radius r: Int) -> RasterImage {
        guard r > 0 else { return im }
        var out = im.pixels
        for y in 0 ..< im.height {
            for x in 0 ..< im.width {
                var sum = 0
                for dy in -r ... r { for dx in -r ... r {
                    sum += Int(im.pixels[min(max(y + dy, 0), im.height - 1) * im.width + min(max(x + dx, 0), im.width - 1)])
                } }
                out[y * im.width + x] = UInt8((Double(sum) / Double((2 * r + 1) * (2 * r + 1))).rounded())
            }
        }
        return RasterImage(width: im.width, height: im.height, channels: 1, pixels: out)
    }

    @Test func idxErrorsNameTheProblem() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("bad.idx")
        try Data([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3]).write(to: bad)
        #expect(throws: MetricsError.unreadableImage(path: bad.path, reason: "IDX header announces 1568 bytes of data, the file has 3")) {
            try ImageSources.readIDXImages(path: bad.path)
        }
        let text = dir.appendingPathComponent("text.idx")
        try Data("hello".utf8).write(to: text)
        #expect(throws: MetricsError.unreadableImage(path: text.path, reason: "not an IDX file (bad magic number)")) {
            try ImageSources.readIDXImages(path: text.path)
        }
        #expect(try ImageSources.readIDXLabels(path: MetricsFixtures.testLabelsIDX).count == 10000)
    }
}
