/// Why a sampling job could not be set up or did not finish.
public enum SamplingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A configuration setting (named as in the Codable record) is invalid or does not combine with the others.
    case invalidSetting(name: String, reason: String)
    /// A network, classifier or caller-supplied tensor has the wrong shape.
    case shapeMismatch(String)
    /// The job was cancelled; the state tensor holds the result of `completedSteps` steps and can be resumed.
    case cancelled(completedSteps: Int)

    /// A readable message.
    public var description: String {
        switch self {
        case .invalidSetting(let name, let reason): return "invalid setting '\(name)': \(reason)"
        case .shapeMismatch(let what): return "shape mismatch: \(what)"
        case .cancelled(let n): return "cancelled after \(n) steps"
        }
    }
}
