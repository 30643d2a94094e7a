import Foundation

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
