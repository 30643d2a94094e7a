/// Hands out named weights with shape checks and reports keys that were never used.
/// In generating mode it instead invents deterministic random weights for every key asked for.
final class WeightReader {
    private let tensors: [String: Tensor]
    private var used = Set<String>()
    private var generator: SplitMix64?
    private(set) var generated: [String: Tensor] = [:]

    init(_ tensors: [String: Tensor]) { self.tensors = tensors }

    /// A reader that creates PyTorch-like random initial values (uniform +-1/sqrt(fan_in),
    /// GroupNorm scales near 1) for every requested key.
    init(randomSeed: UInt64) {
        tensors = [:]
        generator = SplitMix64(seed: randomSeed)
    }

    /// The weight `key`, which must have `shape`.
    func take(_ key: String, _ shape: [Int]) throws -> Tensor {
        if generator != nil { return generate(key, shape) }
        guard let t = tensors[key] else { throw EngineError.missingWeight(key: key, expectedShape: shape) }
        guard t.shape == shape else { throw EngineError.shapeMismatch(key: key, expected: shape, actual: t.shape) }
        used.insert(key)
        return t
    }

    /// Throws if any weight was not taken.
    func finish() throws {
        guard generator == nil else { return }
        let extra = Set(tensors.keys).subtracting(used)
        if !extra.isEmpty { throw EngineError.unexpectedWeights(Array(extra)) }
    }

    private func generate(_ key: String, _ shape: [Int]) -> Tensor {
        let t = Tensor(shape: shape)
        let isNorm = key.contains("norm") || key.hasSuffix("layers.0.weight") || key.hasPrefix("out.0.")
        let fanIn = shape.count > 1 ? shape.dropFirst().reduce(1, *) : (shape.first ?? 1)
        let bound = shape.count > 1 ? 1 / Float(fanIn).squareRoot() : 0.1
        for i in 0..<t.count {
            let u = generator!.nextUnit() * 2 - 1
            if isNorm && key.hasSuffix(".weight") { t.data[i] = 1 + 0.1 * u }
            else if key.hasSuffix("positional_embedding") { t.data[i] = u / Float(shape[0]).squareRoot() }
            else { t.data[i] = u * bound }
        }
        generated[key] = t
        return t
    }
}

/// A small deterministic pseudo-random generator (SplitMix64).
struct SplitMix64 {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    mutating func nextUnit() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

/// Random weights for tests and benchmarks.
public enum RandomWeights {
    /// Deterministic random weights with every key and shape an ADM architecture needs
    /// (UNet for "adm-unet", classifier for "adm-encoder").
    public static func adm(_ architecture: ADMArchitecture, seed: UInt64 = 1) throws -> [String: Tensor] {
        let r = WeightReader(randomSeed: seed)
        if architecture.type == "adm-unet" {
            try ADMUNet.readWeights(architecture, r)
        } else {
            try NoisyClassifier.readWeights(architecture, r)
        }
        return r.generated
    }
}
