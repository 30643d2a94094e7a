import DiffusionEngine
import Foundation
import ImageCodecs
import Metrics
import Testing

/// The evaluator's report: what it includes at which N, and its floors.
@Suite struct EvaluatorTests {
    /// Real test images measured as if generated: every metric lies at its data floor, class
    /// accuracy near the network's test accuracy, FID present at N ≥ the minimum.
    @Test func realImagesSitAtTheFloor() throws {
        let evaluator = MetricsFixtures.evaluator
        let labels = try ImageSources.readIDXLabels(path: MetricsFixtures.testLabelsIDX)
        // Images 5,000 ..< 6,000 (not the first floor rows, which are a random subset).
        let images = Array(MetricsFixtures.testImages[5000 ..< 6000])
        let report = try evaluator.evaluate(images: images, requestedClasses: labels[5000 ..< 6000].map { $0 })
        let fid = try #require(report.fid)
        #expect(fid.n == 1000 && fid.dataFloorN == 1000)
        let floor = try #require(fid.dataFloor)
        #expect(fid.value < 3 * floor && fid.value > floor / 3, "FID \(fid.value), floor \(floor)")
        let acc = try #require(report.classAccuracy)
        #expect(abs(acc.value - 0.9206) < 0.03, "accuracy \(acc.value)")
        #expect(report.perClass.count == 10 && report.perClass.allSatisfy { $0.fid == nil })
        let pr = try #require(report.precisionRecall)
        #expect(abs(pr.precision - pr.dataFloorPrecision!) < 0.05 && abs(pr.recall - pr.dataFloorRecall!) < 0.05)
        let kid = try #require(report.kid)
        #expect(kid.subsetSize == 1000 && abs(kid.mean) < 0.01)
        #expect(report.omitted.isEmpty)
    }

    /// Below the minimum N: no FID, and the report says why; KID and accuracy are still there.
    @Test func smallSetsOmitFIDAndSayWhy() throws {
        let images = Array(MetricsFixtures.testImages.prefix(40))
        let report = try MetricsFixtures.evaluator.evaluate(images: images, requestedClasses: Array(repeating: nil, count: 40))
        #expect(report.fid == nil)
        #expect(report.omitted["fid"]?.contains("N = 40 is below the minimum of 500") == true)
        #expect(report.omitted["class_accuracy"] == "no image requested a class")
        #expect(report.kid != nil && report.precisionRecall != nil)
        #expect(report.predictedClassCounts.reduce(0, +) == 40)
    }

    /// One bad image breaks nothing silently: the error names the file.
    @Test func unreadableFilesAreNamed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-files-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try Data("not a png".utf8).write(to: dir.appendingPathComponent("broken.png"))
        try Data(PNGCodec.encode(MetricsFixtures.testImages[0], record: EmbeddedRecord())).write(to: dir.appendingPathComponent("ok.png"))
        try Data().write(to: dir.appendingPathComponent("contact-sheet.png"))
        let files = try ImageSources.imageFiles(in: dir.path)
        #expect(files.map { ($0 as NSString).lastPathComponent } == ["broken.png", "ok.png"])
        #expect(throws: MetricsError.self) { try ImageSources.readImages(paths: files) }
    }

    /// A reference written and read back is the same reference.
    @Test func referenceFilesRoundTrip() throws {
        let r = MetricsFixtures.evaluator.reference
        let small = ReferenceSet(name: "x", all: r.all, classes: [3: r.classes[3]!], sample: r.sample.prefix(100),
                                 floor: (r.floor!.features.prefix(50), Array(r.floor!.labels.prefix(50))))
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("ref-\(getpid()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try small.safeTensorsBytes().write(to: url)
        let back = try ReferenceSet(contentsOf: url)
        #expect(back.all == small.all && back.classes == small.classes && back.sample == small.sample)
        #expect(back.floor!.features == small.floor!.features && back.floor!.labels == small.floor!.labels)
    }
}
