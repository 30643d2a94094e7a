/// Errors raised while reading weights or building networks.
public enum EngineError: Error, CustomStringConvertible, Equatable {
    /// The safetensors bytes are malformed.
    case malformedSafeTensors(String)
    /// A tensor's dtype is not one the engine converts.
    case unsupportedDType(name: String, dtype: String)
    /// A weight the architecture needs is absent.
    case missingWeight(key: String, expectedShape: [Int])
    /// Weights present that the architecture does not use.
    case unexpectedWeights([String])
    /// A weight has the wrong shape.
    case shapeMismatch(key: String, expected: [Int], actual: [Int])
    /// The architecture description is inconsistent or unsupported.
    case invalidArchitecture(String)
    /// A network input has the wrong shape or values.
    case invalidInput(String)

    /// A human-readable explanation naming the tensor or field involved.
    public var description: String {
        switch self {
        case .malformedSafeTensors(let m): "malformed safetensors: \(m)"
        case .unsupportedDType(let n, let d): "tensor '\(n)' has unsupported dtype \(d)"
        case .missingWeight(let k, let s): "missing weight '\(k)' (expected shape \(s))"
        case .unexpectedWeights(let ks): "unexpected weights: \(ks.sorted().joined(separator: ", "))"
        case .shapeMismatch(let k, let e, let a): "weight '\(k)' has shape \(a), expected \(e)"
        case .invalidArchitecture(let m): "invalid architecture: \(m)"
        case .invalidInput(let m): "invalid input: \(m)"
        }
    }
}
