import Foundation
import Yams

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
            let line = yamlErrorLine(error)
            var message = "not valid YAML: \(describe(error))"
            if message.contains("cannot start any token"), let line, tabStarts(line: line, in: text) {
                message += " (a tab: YAML indents with spaces, never tabs)"
            }
            throw ValidationFailure([FieldError("", message, line: line)])
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

    /// Whether 1-based `line` of `text` holds a tab outside quotes (where libyaml stops at a tab).
    static func tabStarts(line: Int, in text: String) -> Bool {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard line >= 1, line <= lines.count else { return false }
        return lines[line - 1].contains("\t")
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
