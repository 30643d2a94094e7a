import DiffusionEngine
import Foundation
import ImageCodecs
import Yams

/// The mode against the model, the classes and the image counts of a job file.
extension JobValidator {
    func modeAgainstModel(_ top: [String: Node], mode: GenerationMode, model: ModelInfo?, _ r: inout NodeReader) {
        if let model {
            switch mode {
            case .classConditional where !model.isConditional:
                r.fail("mode", "model \(model.name) is unconditional; use mode unconditional or classifier-guided", top["mode"])
            case .classifierFree where !model.isConditional || model.nullClass == nil:
                r.fail("mode", "classifier-free guidance needs a conditional model with a null class; \(model.name) has none", top["mode"])
            case .unconditional where model.isConditional && model.nullClass == nil:
                r.fail("mode", "model \(model.name) is conditional without a null class, so it cannot sample unconditionally", top["mode"])
            default: break
            }
        }
    }

    func classesSection(_ top: [String: Node], mode: GenerationMode, model: ModelInfo?, classifier: ModelInfo?,
                        _ r: inout NodeReader) -> [ClassRef] {
        let classNames: [String] = (mode == .classifierGuided && !(model?.isConditional ?? false))
            ? (classifier?.classes ?? []) : (model?.classes ?? [])
        var classes: [ClassRef] = []
        if mode.usesClasses {
            if let n = top["classes"] {
                let items: [Node]
                if case .sequence = n { items = r.sequence(n, path: "classes") ?? [] } else { items = [n] }
                if items.isEmpty { r.fail("classes", "must list at least one class", n) }
                if items.count > 1000 { r.fail("classes", "at most 1000 entries", n) }
                for (i, item) in items.prefix(1000).enumerated() {
                    let p = "classes[\(i)]"
                    guard case let .scalar(s) = item else { r.fail(p, "expected a class name or index", item); continue }
                    if (s.style == .plain || s.style == .any), let idx = Int(s.string) {
                        if model != nil, !classNames.indices.contains(idx) {
                            r.fail(p, "class index must be between 0 and \(classNames.count - 1), got \(idx)", item)
                        } else if classNames.indices.contains(idx) {
                            classes.append(ClassRef(index: idx, name: classNames[idx]))
                        }
                    } else if let idx = classNames.firstIndex(of: s.string) {
                        classes.append(ClassRef(index: idx, name: classNames[idx]))
                    } else if let idx = classNames.firstIndex(where: { $0.caseInsensitiveCompare(s.string) == .orderedSame }) {
                        classes.append(ClassRef(index: idx, name: classNames[idx]))
                    } else if model != nil {
                        r.fail(p, "unknown class \"\(s.string.prefix(60))\"; known: \(classNames.joined(separator: ", "))", item)
                    }
                }
            } else {
                classes = classNames.enumerated().map { ClassRef(index: $0.offset, name: $0.element) }
            }
        } else if let n = top["classes"] {
            r.fail("classes", "does not apply to unconditional mode", n)
        }
        return classes
    }

    func countsSection(_ top: [String: Node], mode: GenerationMode, classes: [ClassRef], _ r: inout NodeReader) -> (perClass: Int?, total: Int) {
        var perClass: Int?
        var total = 0
        switch (top["images_per_class"], top["images"]) {
        case let (p?, t?):
            r.fail("images", "give either images or images_per_class, not both", t)
            _ = p
        case let (p?, nil):
            if !mode.usesClasses {
                r.fail("images_per_class", "does not apply to unconditional mode (use images)", p)
            } else if let v = r.int(p, path: "images_per_class", range: 1 ... limits.imagesPerJob) {
                perClass = v
                total = v * max(classes.count, 1)
                if total > limits.imagesPerJob {
                    r.fail("images_per_class", "\(v) per class x \(classes.count) classes = \(total) images, more than the limit of \(limits.imagesPerJob)", p)
                }
            }
        case let (nil, t?):
            if let v = r.int(t, path: "images", range: 1 ... limits.imagesPerJob) { total = v }
        case (nil, nil):
            r.fail("images", "missing: give images (a total) or images_per_class", nil)
        }
        return (perClass, total)
    }
}
