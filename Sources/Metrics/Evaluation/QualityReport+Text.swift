import Foundation

extension QualityReport {
    /// A few lines for people: each metric with its N and data floor, and why any is missing.
    public func render() -> String {
        func f(_ v: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", v) }
        var out = ["\(n) images, features \(featuresModel) (sha256 \(featuresModelHash.prefix(12))), reference \(reference) (\(referenceImages) images)"]
        if let fid {
            let floor = fid.dataFloor.map { " (data floor \(f($0)) at N = \(fid.dataFloorN ?? fid.n))" } ?? " (no data floor for this reference)"
            out.append("  FID              \(f(fid.value)) at N = \(fid.n)\(floor)")
        } else if let why = omitted["fid"] {
            out.append("  FID              omitted: \(why)")
        }
        if let kid {
            let floor = kid.dataFloorMean.map { ", data floor \(f($0, 5))" } ?? ""
            out.append("  KID              \(f(kid.mean, 5)) ± \(f(kid.std, 5)) (\(kid.subsets) subsets of \(kid.subsetSize)\(floor))")
        } else if let why = omitted["kid"] { out.append("  KID              omitted: \(why)") }
        if let pr = precisionRecall {
            let floor = pr.dataFloorPrecision.map { p in " (data floor \(f(p, 3)) / \(pr.dataFloorRecall.map { f($0, 3) } ?? "-"))" } ?? ""
            out.append("  precision/recall \(f(pr.precision, 3)) / \(f(pr.recall, 3)) (k = \(pr.k), \(pr.referenceN) reference images\(floor))")
        } else if let why = omitted["precision_recall"] { out.append("  precision/recall omitted: \(why)") }
        if let acc = classAccuracy {
            let real = acc.realImageAccuracy.map { " (real test images: \(f($0, 3)))" } ?? ""
            out.append("  class accuracy   \(f(acc.value, 3)) of \(acc.n) conditioned images\(real)")
            for c in perClass {
                let fid = c.fid.map { ", FID \(f($0)) (floor \(c.fidDataFloor.map { f($0) } ?? "-"))" } ?? ""
                out.append("    \(String(format: "%2d", c.index)) \((c.name ?? "").padding(toLength: 12, withPad: " ", startingAt: 0)) n = \(String(format: "%5d", c.n))  accuracy \(f(c.accuracy, 3))\(fid)")
            }
        } else if let why = omitted["class_accuracy"] { out.append("  class accuracy   omitted: \(why)") }
        out.append("  predicted classes \(predictedClassCounts.map(String.init).joined(separator: " "))")
        out.append("  measured in \(f(seconds, 2)) s")
        return out.joined(separator: "\n")
    }
}
