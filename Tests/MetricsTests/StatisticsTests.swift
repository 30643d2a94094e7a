import DiffusionEngine
import Foundation
import Metrics
import Testing

/// FID, KID and precision/recall against the independent numpy/scipy float64 computation of
/// training/make_metrics_fixtures.py on the same feature sets.
@Suite struct StatisticsTests {
    static let cases = ["close", "shifted", "few", "tiny"]

    func load(_ name: String) throws -> (a: FeatureMatrix, b: FeatureMatrix, expected: [Double]) {
        let st = try MetricsFixtures.safeTensors("cases.safetensors")
        func matrix(_ key: String) throws -> FeatureMatrix {
            let v = try st.floats(key)
            return FeatureMatrix(count: v.count / 128, dimension: 128, values: v)
        }
        return (try matrix("\(name).a"), try matrix("\(name).b"), try st.doubles("\(name).expected"))
    }

    @Test(arguments: cases)
    func fidMatchesScipySqrtm(_ name: String) throws {
        let (a, b, expected) = try load(name)
        let fid = try FrechetDistance.between(try FeatureStatistics(a), try FeatureStatistics(b))
        // scipy's sqrtm itself is only ~1e-8 accurate on the singular cases (few, tiny: N < d).
        #expect(MetricsFixtures.relative(fid, expected[0]) < 1e-6, "\(name): FID \(fid) vs scipy \(expected[0])")
    }

    @Test(arguments: cases)
    func kidMatchesNumpy(_ name: String) throws {
        let (a, b, expected) = try load(name)
        let kid = try KernelInceptionDistance.estimate(a, b, subsets: Int(expected[6]), subsetSize: Int(expected[7]))
        #expect(kid.subsetSize == Int(expected[3]))
        #expect(abs(kid.mean - expected[1]) <= 1e-6 * abs(expected[1]) + 1e-12, "\(name): KID \(kid.mean) vs \(expected[1])")
        #expect(abs(kid.std - expected[2]) <= 1e-6 * abs(expected[2]) + 1e-12, "\(name): KID std \(kid.std) vs \(expected[2])")
    }

    @Test(arguments: cases)
    func precisionRecallMatchScipy(_ name: String) throws {
        let (a, b, expected) = try load(name)
        let pr = try PrecisionRecall.estimate(real: b.prefix(a.count), generated: a, k: 3)
        #expect(abs(pr.precision - expected[4]) <= 1e-2, "\(name): precision \(pr.precision) vs \(expected[4])")
        #expect(abs(pr.recall - expected[5]) <= 1e-2, "\(name): recall \(pr.recall) vs \(expected[5])")
    }

    @Test func covarianceMatchesClosedForm() throws {
        // Rows (1, 2), (3, 5), (5, 11): mean (3, 6); np.cov = [[4, 9], [9, 21]].
        let s = try FeatureStatistics(FeatureMatrix(count: 3, dimension: 2, values: [1, 2, 3, 5, 5, 11]))
        #expect(s.mean == [3, 6])
        #expect(s.covariance.values == [4, 9, 9, 21])
    }

    @Test func fidOfDiagonalGaussiansIsClosedForm() throws {
        // Σ₁ = diag(4, 9), Σ₂ = diag(1, 16), μ₁ - μ₂ = (1, 2): 5 + 13 + 17 - 2 (2 + 12) = 7.
        let a = FeatureStatistics(count: 10, mean: [1, 2], covariance: SymmetricMatrix(dimension: 2, values: [4, 0, 0, 9]))
        let b = FeatureStatistics(count: 10, mean: [0, 0], covariance: SymmetricMatrix(dimension: 2, values: [1, 0, 0, 16]))
        #expect(abs(try FrechetDistance.between(a, b) - 7) < 1e-12)
        #expect(abs(try FrechetDistance.between(a, a)) < 1e-12)
    }

    @Test func fewerThanTwoSamplesIsAClearError() throws {
        let one = FeatureMatrix(count: 1, dimension: 2, values: [1, 2])
        #expect(throws: MetricsError.invalidInput("a covariance needs at least 2 feature vectors, got 1")) { try FeatureStatistics(one) }
        #expect(throws: MetricsError.self) { try PrecisionRecall.estimate(real: one, generated: one) }
    }

    @Test func subsetSamplerKnownAnswers() {
        // SplitMix64 from seed 0: the reference sequence's first outputs.
        var s = SubsetSampler(seed: 0)
        #expect(s.next() == 0xE220_A839_7B1D_CDAF)
        #expect(s.next() == 0x6E78_9E6A_A1B9_65F4)
        var t = SubsetSampler(seed: 1)
        let subset = t.subset(of: 10, size: 10)
        #expect(subset.sorted() == Array(0 ..< 10))
    }
}
