import Foundation

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
