import Foundation
import ImageCodecs
import ModelBundles

/// Measures sets of images against a reference: FID (overall and per class), KID, precision and
/// recall, class accuracy, each beside its data floor at the same N.
public final class QualityEvaluator: @unchecked Sendable {
    /// The features network.
    public let extractor: FeatureExtractor
    /// What the images are compared with.
    public let reference: ReferenceSet
    /// Below this many images (overall, or of one class) FID is omitted: it is biased like c/N.
    public let minimumImagesForFID: Int
    /// KID subsets and their size; the neighbourhood size of precision and recall.
    public var kidSubsets = 100, kidSubsetSize = 1000, neighbourhood = 3
    /// The features network's class accuracy on held-out real images, when its bundle records it.
    public let realImageAccuracy: Double?

    private struct FloorMetrics { var fid: Double?, kid: Double?, precision: Double?, recall: Double? }
    private var floors: [String: FloorMetrics] = [:]
    private let lock = NSLock()

    /// The default minimum N for FID (documented with `metrics.min_images`).
    public static let defaultMinimumImagesForFID = 500

    /// An evaluator on `extractor`'s network against `reference` (by default the bundle's own).
    public init(extractor: FeatureExtractor, reference: ReferenceSet? = nil, minimumImagesForFID: Int = QualityEvaluator.defaultMinimumImagesForFID) throws {
        self.extractor = extractor
        self.reference = try reference ?? ReferenceSet(bundle: extractor.bundle)
        guard self.reference.dimension == extractor.dimension else {
            throw MetricsError.invalidReference("'\(self.reference.name)' has \(self.reference.dimension)-d features, the network \(extractor.dimension)")
        }
        self.minimumImagesForFID = max(2, minimumImagesForFID)
        realImageAccuracy = (try? FeaturesBundleInfo(bundle: extractor.bundle))?.recipe?.testAccuracy
    }

    /// Loads the features bundle folder `directory` and its reference.
    public convenience init(featuresBundle directory: URL, reference: ReferenceSet? = nil, minimumImagesForFID: Int = QualityEvaluator.defaultMinimumImagesForFID) throws {
        try self.init(extractor: try FeatureExtractor(bundle: try ModelBundle(directory: directory)), reference: reference,
                      minimumImagesForFID: minimumImagesForFID)
    }

    /// Measures images; `requestedClasses[i]` is the class image i was generated for (nil: none).
    public func evaluate(images: [RasterImage], requestedClasses: [Int?]) throws -> QualityReport {
        let started = DispatchTime.now()
        let extracted = try extractor.features(of: images)
        var report = try evaluate(extracted, requestedClasses: requestedClasses)
        report.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        return report
    }

    /// Measures features already extracted with `extractor`.
    public func evaluate(_ extracted: ExtractedFeatures, requestedClasses: [Int?]) throws -> QualityReport {
        let started = DispatchTime.now()
        let features = extracted.features, n = features.count
        guard requestedClasses.count == n else { throw MetricsError.invalidInput("\(requestedClasses.count) classes for \(n) images") }
        var omitted: [String: String] = [:]
        var report = QualityReport(
            n: n, featuresModel: extractor.bundle.manifest.name, featuresModelHash: extractor.bundle.contentHash,
            reference: reference.name, referenceImages: reference.all.count, minimumImagesForFID: minimumImagesForFID,
            fid: nil, kid: nil, precisionRecall: nil, classAccuracy: nil, perClass: [], predictedClassCounts: [],
            omitted: [:], seconds: 0)
        let floor = floorMetrics(n: n)

        if n >= minimumImagesForFID {
            let value = try FrechetDistance.between(try FeatureStatistics(features), reference.all)
            report.fid = .init(value: value, n: n, dataFloor: floor.fid, dataFloorN: reference.floor.map { min(n, $0.features.count) })
        } else {
            omitted["fid"] = "N = \(n) is below the minimum of \(minimumImagesForFID) images: FID is biased upward like c/N and too noisy to compare at small N; KID (unbiased) and class accuracy are reported instead"
        }
        if n >= 2 {
            let kid = try KernelInceptionDistance.estimate(features, reference.sample, subsets: kidSubsets, subsetSize: kidSubsetSize)
            report.kid = .init(mean: kid.mean, std: kid.std, subsets: kid.subsets, subsetSize: kid.subsetSize, dataFloorMean: floor.kid)
        } else {
            omitted["kid"] = "KID needs at least 2 images"
        }
        if n > neighbourhood {
            let real = reference.sample.prefix(n)
            let pr = try PrecisionRecall.estimate(real: real, generated: features, k: neighbourhood)
            report.precisionRecall = .init(precision: pr.precision, recall: pr.recall, k: pr.k, referenceN: real.count,
                                           dataFloorPrecision: floor.precision, dataFloorRecall: floor.recall)
        } else {
            omitted["precision_recall"] = "precision and recall (k = \(neighbourhood)) need more than \(neighbourhood) images"
        }

        let classCount = extractor.network.logitCount
        var predictedCounts = [Int](repeating: 0, count: classCount)
        for p in extracted.predictedClasses { predictedCounts[p] += 1 }
        report.predictedClassCounts = predictedCounts
        let names = extractor.bundle.manifest.classes ?? []
        var byClass: [Int: [Int]] = [:]
        for (i, c) in requestedClasses.enumerated() { if let c { byClass[c, default: []].append(i) } }
        let conditioned = byClass.values.reduce(0) { $0 + $1.count }
        if conditioned > 0 {
            var correct = 0
            for (c, rows) in byClass.sorted(by: { $0.key < $1.key }) {
                let hits = rows.filter { extracted.predictedClasses[$0] == c }.count
                correct += hits
                var entry = QualityReport.PerClass(index: c, name: c < names.count ? names[c] : nil, n: rows.count,
                                                   accuracy: Double(hits) / Double(rows.count), fid: nil, fidDataFloor: nil)
                if rows.count >= minimumImagesForFID, let stats = reference.classes[c] {
                    entry.fid = try FrechetDistance.between(try FeatureStatistics(features.rows(rows)), stats)
                    entry.fidDataFloor = classFloorFID(c, n: rows.count)
                }
                report.perClass.append(entry)
            }
            report.classAccuracy = .init(value: Double(correct) / Double(conditioned), n: conditioned, realImageAccuracy: realImageAccuracy)
        } else {
            omitted["class_accuracy"] = "no image requested a class"
        }
        report.omitted = omitted
        report.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        return report
    }

    /// The metrics of the first min(n, |floor set|) held-out real images (cached per n).
    private func floorMetrics(n: Int) -> FloorMetrics {
        guard let set = reference.floor, n >= 2 else { return FloorMetrics() }
        let m = min(n, set.features.count)
        lock.lock()
        if let cached = floors["all/\(m)"] { lock.unlock(); return cached }
        lock.unlock()
        let real = set.features.prefix(m)
        var result = FloorMetrics()
        if m >= minimumImagesForFID { result.fid = try? FrechetDistance.between(try FeatureStatistics(real), reference.all) }
        result.kid = (try? KernelInceptionDistance.estimate(real, reference.sample, subsets: kidSubsets, subsetSize: kidSubsetSize))?.mean
        if m > neighbourhood, let pr = try? PrecisionRecall.estimate(real: reference.sample.prefix(m), generated: real, k: neighbourhood) {
            result.precision = pr.precision; result.recall = pr.recall
        }
        lock.lock(); floors["all/\(m)"] = result; lock.unlock()
        return result
    }

    /// FID of the first n held-out real images of class c against the class's statistics.
    private func classFloorFID(_ c: Int, n: Int) -> Double? {
        guard let set = reference.floor, set.labels.count == set.features.count, let stats = reference.classes[c] else { return nil }
        let rows = set.labels.indices.filter { set.labels[$0] == c }.prefix(n)
        guard rows.count >= 2 else { return nil }
        return try? FrechetDistance.between(try FeatureStatistics(set.features.rows(Array(rows))), stats)
    }

    /// FID of the first n held-out real images (the data floor), nil without a floor set.
    public func dataFloorFID(n: Int) throws -> Double? {
        guard let set = reference.floor else { return nil }
        return try FrechetDistance.between(try FeatureStatistics(set.features.prefix(n)), reference.all)
    }
}
