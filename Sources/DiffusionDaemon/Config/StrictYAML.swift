import Foundation
import Yams

/// One problem found in a config or job file: the field path, what is wrong,
/// and the line when known.
public struct FieldError: Error, CustomStringConvertible, Sendable, Equatable, Codable {
    /// Dotted path of the field (`sampler.steps`, `classes[2]`); empty for the whole file.
    public var path: String
    public var message: String
    public var line: Int?

    public init(_ path: String, _ message: String, line: Int? = nil) {
        self.path = path
        self.message = message
        self.line = line
    }

    public var description: String {
        let where_ = line.map { " (line \($0))" } ?? ""
        return path.isEmpty ? "\(message)\(where_)" : "\(path): \(message)\(where_)"
    }
}

/// Every problem found in one file.
public struct ValidationFailure: Error, CustomStringConvertible, Sendable, Equatable {
    public var errors: [FieldError]

    public init(_ errors: [FieldError]) { self.errors = errors }

    public var description: String { errors.map(\.description).joined(separator: "\n") }

    /// True when some error concerns `path` (exactly, or a field below it).
    public func mentions(_ path: String) -> Bool {
        errors.contains { $0.path == path || $0.path.hasPrefix(path + ".") || $0.path.hasPrefix(path + "[") }
    }
}

/// Limits on the raw text of a YAML (or JSON) document.
public struct YAMLLimits: Sendable {
    public var maxBytes: Int
    /// Alias references (`*name`) allowed; counted conservatively on the raw text.
    public var maxAliases: Int
    /// Nodes after alias expansion.
    public var maxNodes: Int

    public init(maxBytes: Int = 65_536, maxAliases: Int = 16, maxNodes: Int = 10_000) {
        self.maxBytes = maxBytes
        self.maxAliases = maxAliases
        self.maxNodes = maxNodes
    }
}

/// Loads one YAML (or JSON, which is parsed as YAML) document with limits
/// against hostile input: size, invalid UTF-8, control characters, alias bombs.
public enum StrictYAML {
    public static func load(_ bytes: [UInt8], limits: YAMLLimits = YAMLLimits()) throws(ValidationFailure) -> Node {
        if bytes.count > limits.maxBytes {
            throw ValidationFailure([FieldError("", "file is \(bytes.count) bytes, more than the limit of \(limits.maxBytes)")])
        }
        var body = bytes[...]
        if body.starts(with: [0xEF, 0xBB, 0xBF]) { body = body.dropFirst(3) }
        guard let text = String(validating: body, as: UTF8.self) else {
            let line = 1 + validUTF8PrefixNewlines(Array(body))
            throw ValidationFailure([FieldError("", "not valid UTF-8", line: line)])
        }
        var line = 1
        for scalar in text.unicodeScalars {
            if scalar == "\n" { line += 1; continue }
            let v = scalar.value
            if (v < 0x20 && v != 0x09 && v != 0x0D) || v == 0x7F || (0x80 ... 0x9F).contains(v) && v != 0x85 {
                throw ValidationFailure([FieldError("", String(format: "control character U+%04X not allowed", v), line: line)])
            }
        }
        let aliases = countAliasCandidates(text)
        if aliases > limits.maxAliases {
            throw ValidationFailure([FieldError("", "too many YAML aliases (\(aliases), at most \(limits.maxAliases))")])
        }
        let node: Node?
        do {
            node = try Parser(yaml: text).singleRoot()
        } catch let error as YamlError {
            throw ValidationFailure([FieldError("", "not valid YAML: \(describe(error))", line: yamlErrorLine(error))])
        } catch {
            throw ValidationFailure([FieldError("", "not valid YAML: \(error)")])
        }
        guard let node else { throw ValidationFailure([FieldError("", "the file is empty")]) }
        var budget = limits.maxNodes
        guard countNodes(node, budget: &budget, depth: 0) else {
            if budget >= 0 {
                throw ValidationFailure([FieldError("", "nested too deeply (more than \(maxDepth) levels)")])
            }
            throw ValidationFailure([FieldError("", "document too large after expanding aliases (more than \(limits.maxNodes) nodes)")])
        }
        return node
    }

    /// Collections inside collections, at most (libyaml itself stops at 1000).
    public static let maxDepth = 64

    /// Counts `*` characters that could start an alias: at the start of a line
    /// or after whitespace or a flow indicator. Over-counts (inside quotes and
    /// comments) but never under-counts.
    static func countAliasCandidates(_ text: String) -> Int {
        var count = 0
        var previous: UInt8 = 0x0A
        for b in text.utf8 {
            if b == UInt8(ascii: "*") {
                switch previous {
                case 0x0A, 0x0D, 0x20, 0x09, UInt8(ascii: "["), UInt8(ascii: "{"), UInt8(ascii: ","),
                     UInt8(ascii: ":"), UInt8(ascii: "-"), UInt8(ascii: "?"):
                    count += 1
                default: break
                }
            }
            previous = b
        }
        return count
    }

    static func countNodes(_ node: Node, budget: inout Int, depth: Int) -> Bool {
        budget -= 1
        if budget < 0 || depth > maxDepth { return false }
        switch node {
        case .scalar, .alias: return true
        case let .sequence(seq):
            for n in seq where !countNodes(n, budget: &budget, depth: depth + 1) { return false }
            return true
        case let .mapping(map):
            for (k, v) in map {
                if !countNodes(k, budget: &budget, depth: depth + 1) || !countNodes(v, budget: &budget, depth: depth + 1) {
                    return false
                }
            }
            return true
        }
    }

    static func validUTF8PrefixNewlines(_ bytes: [UInt8]) -> Int {
        // Newlines before the first invalid sequence.
        var newlines = 0
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            let len: Int
            if b < 0x80 { len = 1 } else if b & 0xE0 == 0xC0 { len = 2 } else if b & 0xF0 == 0xE0 { len = 3 }
            else if b & 0xF8 == 0xF0 { len = 4 } else { break }
            if i + len > bytes.count || String(validating: bytes[i ..< i + len], as: UTF8.self) == nil { break }
            if b == 0x0A { newlines += 1 }
            i += len
        }
        return newlines
    }

    static func yamlErrorLine(_ error: YamlError) -> Int? {
        switch error {
        case let .scanner(_, _, mark, _), let .parser(_, _, mark, _), let .composer(_, _, mark, _):
            return mark.line
        case let .duplicatedKeysInMapping(_, context):
            return context.mark.line
        default:
            return nil
        }
    }

    static func describe(_ error: YamlError) -> String {
        switch error {
        case let .scanner(context, problem, _, _), let .parser(context, problem, _, _), let .composer(context, problem, _, _):
            if problem.hasPrefix("Maximum nesting level reached") { return "nested too deeply (more than 1000 levels)" }
            if let context { return "\(context.text) \(problem)" }
            return problem
        case let .duplicatedKeysInMapping(duplicates, _):
            return "duplicate keys: \(duplicates.joined(separator: ", "))"
        default:
            return "\(error)".split(separator: "\n").first.map(String.init) ?? "\(error)"
        }
    }
}

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

/// Names that are safe as single path components.
public enum SafeName {
    /// 1-64 characters from [A-Za-z0-9._-], not starting with '.' or '-', no "..".
    public static func problem(_ name: String) -> String? {
        if name.isEmpty { return "must not be empty" }
        if name.utf8.count > 64 { return "must be at most 64 characters" }
        if name.contains("/") { return "must not contain '/' (a name, not a path)" }
        if name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            return "must not contain control characters"
        }
        if name == "." || name == ".." || name.contains("..") { return "must not contain '..'" }
        if name.hasPrefix(".") { return "must not start with '.'" }
        if name.hasPrefix("-") { return "must not start with '-'" }
        let ok = name.unicodeScalars.allSatisfy {
            ("a" ... "z").contains($0) || ("A" ... "Z").contains($0) || ("0" ... "9").contains($0) || $0 == "." || $0 == "_" || $0 == "-"
        }
        return ok ? nil : "may contain only letters, digits, '.', '_' and '-'"
    }

    /// A safe name derived from arbitrary text (unsafe characters become '_').
    public static func sanitize(_ text: String, fallback: String = "job") -> String {
        var out = String(text.unicodeScalars.map { s -> Character in
            let ok = ("a" ... "z").contains(s) || ("A" ... "Z").contains(s) || ("0" ... "9").contains(s) || s == "_" || s == "-" || s == "."
            return ok ? Character(s) : "_"
        })
        while out.contains("..") { out = out.replacingOccurrences(of: "..", with: "_") }
        while out.hasPrefix(".") || out.hasPrefix("-") { out.removeFirst() }
        if out.utf8.count > 64 { out = String(out.prefix(64)) }
        return out.isEmpty ? fallback : out
    }
}
