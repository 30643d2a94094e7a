import DiffusionEngine
import Foundation
import Yams

/// Reads typed values out of a YAML node tree, collecting errors that name the
/// field path, instead of stopping at the first.
public struct NodeReader {
    public private(set) var errors: [FieldError] = []

    public init() {}

    public mutating func fail(_ path: String, _ message: String, _ node: Node?) {
        errors.append(FieldError(path, message, line: node?.mark?.line))
    }

    static func join(_ base: String, _ key: String) -> String { base.isEmpty ? key : "\(base).\(key)" }

    static func isNull(_ node: Node) -> Bool {
        if case let .scalar(s) = node, s.style == .plain || s.style == .any {
            return ["", "~", "null", "Null", "NULL"].contains(s.string)
        }
        return false
    }

    /// A mapping's entries by key; unknown keys and non-string keys are errors.
    public mutating func mapping(_ node: Node, path: String, known: [String]) -> [String: Node]? {
        guard case let .mapping(map) = node else {
            fail(path, "expected a mapping of keys to values, got \(kind(node))", node)
            return nil
        }
        var out: [String: Node] = [:]
        let knownSet = Set(known)
        for (k, v) in map {
            guard case let .scalar(key) = k else {
                fail(path, "keys must be plain strings", k)
                continue
            }
            if !knownSet.contains(key.string) {
                let hint = closest(key.string, known).map { " (did you mean \($0)?)" } ?? ""
                let known = known.joined(separator: ", ")
                fail(Self.join(path, key.string), "unknown key\(hint); known keys: \(known)", k)
                continue
            }
            if NodeReader.isNull(v) { continue }
            out[key.string] = v
        }
        return out
    }

    public mutating func string(_ node: Node, path: String) -> String? {
        guard case let .scalar(s) = node else {
            fail(path, "expected a string, got \(kind(node))", node)
            return nil
        }
        return s.string
    }

    public mutating func int(_ node: Node, path: String, range: ClosedRange<Int>) -> Int? {
        guard case let .scalar(s) = node, s.style == .plain || s.style == .any else {
            fail(path, "expected an integer, got \(kind(node))", node)
            return nil
        }
        let text = s.string.hasPrefix("+") ? String(s.string.dropFirst()) : s.string
        guard let v = Int(text) else {
            if let d = Double(text), d.isFinite, d.rounded() == d {
                // Whole numbers written as 1e3, or beyond 64 bits.
                guard abs(d) < 9e18, range.contains(Int(d)) else {
                    fail(path, "must be between \(range.lowerBound) and \(range.upperBound), got \(describeScalar(s.string))", node)
                    return nil
                }
                return Int(d)
            }
            fail(path, "expected an integer, got \(describeScalar(s.string))", node)
            return nil
        }
        guard range.contains(v) else {
            fail(path, "must be between \(range.lowerBound) and \(range.upperBound), got \(v)", node)
            return nil
        }
        return v
    }

    public mutating func uint64(_ node: Node, path: String) -> UInt64? {
        guard case let .scalar(s) = node, s.style == .plain || s.style == .any, let v = UInt64(s.string) else {
            fail(path, "expected a non-negative integer below 2^64, got \(describeNode(node))", node)
            return nil
        }
        return v
    }

    public mutating func double(_ node: Node, path: String, range: ClosedRange<Double>) -> Double? {
        guard case let .scalar(s) = node, s.style == .plain || s.style == .any else {
            fail(path, "expected a number, got \(kind(node))", node)
            return nil
        }
        let lower = s.string.lowercased()
        if lower.contains("nan") || lower.contains("inf") {
            fail(path, "must be a finite number, got \(s.string)", node)
            return nil
        }
        guard let v = Double(s.string) else {
            fail(path, "expected a number, got \(describeScalar(s.string))", node)
            return nil
        }
        guard v.isFinite else {
            fail(path, "must be a finite number, got \(s.string)", node)
            return nil
        }
        guard range.contains(v) else {
            fail(path, "must be between \(fmt(range.lowerBound)) and \(fmt(range.upperBound)), got \(s.string)", node)
            return nil
        }
        return v
    }

    public mutating func bool(_ node: Node, path: String) -> Bool? {
        guard case let .scalar(s) = node, s.style == .plain || s.style == .any else {
            fail(path, "expected true or false, got \(kind(node))", node)
            return nil
        }
        switch s.string {
        case "true", "True", "TRUE": return true
        case "false", "False", "FALSE": return false
        default:
            fail(path, "expected true or false, got \(describeScalar(s.string))", node)
            return nil
        }
    }

    public mutating func sequence(_ node: Node, path: String) -> [Node]? {
        if case let .sequence(seq) = node { return Array(seq) }
        fail(path, "expected a list, got \(kind(node))", node)
        return nil
    }

    /// A `ComputePrecision` by its name, refused (by name, with the flags it needs) when `cpu` cannot run it.
    mutating func precision(_ node: Node, path: String, cpu: CPUFeatures) -> ComputePrecision? {
        guard let s = choice(node, path: path, ComputePrecision.allCases.map(\.rawValue)), let precision = ComputePrecision(rawValue: s) else { return nil }
        if let why = precision.unsupportedReason(on: cpu) { fail(path, why, node); return nil }
        return precision
    }

    /// A string from a fixed set.
    public mutating func choice(_ node: Node, path: String, _ choices: [String]) -> String? {
        guard let s = string(node, path: path) else { return nil }
        guard choices.contains(s) else {
            fail(path, "must be one of \(choices.joined(separator: ", ")), got \(describeScalar(s))", node)
            return nil
        }
        return s
    }

    func kind(_ node: Node) -> String {
        switch node {
        case let .scalar(s): return describeScalar(s.string)
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    func describeNode(_ node: Node) -> String { kind(node) }

    func describeScalar(_ s: String) -> String {
        let shown = s.count > 40 ? String(s.prefix(40)) + "..." : s
        return "\"\(shown)\""
    }

    func fmt(_ d: Double) -> String {
        d.rounded() == d && abs(d) < 1e15 ? String(Int(d)) : String(d)
    }

    func closest(_ key: String, _ known: [String]) -> String? {
        let scored = known.map { ($0, editDistance(key.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(2, key.count / 3) else { return nil }
        return best.0
    }

    func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var prev = Array(0 ... b.count)
        for i in 1 ... a.count {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in 1 ... b.count {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return prev[b.count]
    }
}
