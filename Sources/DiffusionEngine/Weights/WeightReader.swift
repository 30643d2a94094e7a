/// Hands out named weights with shape checks and reports keys that were never used.
final class WeightReader {
    private let tensors: [String: Tensor]
    private var used = Set<String>()

    init(_ tensors: [String: Tensor]) { self.tensors = tensors }

    /// The weight `key`, which must have `shape`.
    func take(_ key: String, _ shape: [Int]) throws -> Tensor {
        guard let t = tensors[key] else { throw EngineError.missingWeight(key: key, expectedShape: shape) }
        guard t.shape == shape else { throw EngineError.shapeMismatch(key: key, expected: shape, actual: t.shape) }
        used.insert(key)
        return t
    }

    /// Throws if any weight was not taken.
    func finish() throws {
        let extra = Set(tensors.keys).subtracting(used)
        if !extra.isEmpty { throw EngineError.unexpectedWeights(Array(extra)) }
    }
}
