extension ReferenceSet {
    /// Rows kept as the reference's feature sample (KID, precision/recall).
    public static let sampleSize = 10_000

    /// A reference from the features of real images: statistics of all of them and, when labels
    /// are given, per class; a sample of at most `sampleSize` rows (a subset drawn by
    /// `SubsetSampler(seed: 0)` when there are more); optionally held-out features for the data floor.
    public static func build(name: String, features: FeatureMatrix, labels: [Int]?,
                             floor: (features: FeatureMatrix, labels: [Int])? = nil) throws -> ReferenceSet {
        if let labels, labels.count != features.count {
            throw MetricsError.invalidInput("\(labels.count) labels for \(features.count) images")
        }
        var classes: [Int: FeatureStatistics] = [:]
        if let labels {
            var rowsByClass: [Int: [Int]] = [:]
            for (i, c) in labels.enumerated() { rowsByClass[c, default: []].append(i) }
            for (c, rows) in rowsByClass where rows.count >= 2 { classes[c] = try FeatureStatistics(features.rows(rows)) }
        }
        var sampler = SubsetSampler(seed: 0)
        let sample = features.count <= sampleSize ? features : features.rows(sampler.subset(of: features.count, size: sampleSize))
        return ReferenceSet(name: name, all: try FeatureStatistics(features), classes: classes, sample: sample, floor: floor)
    }
}
