import DiffusionEngine

/// Reproducible random subsets for KID: SplitMix64 (Steele, Lea and Flood 2014) driving a partial
/// Fisher-Yates shuffle, so that any implementation can reproduce the same index lists.
public struct SubsetSampler: Sendable {
    private var state: UInt64

    /// A sampler whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `size` distinct indices of 0 ..< population: the first `size` positions of a Fisher-Yates
    /// shuffle in which position i swaps with i + (next() mod (population - i)).
    public mutating func subset(of population: Int, size: Int) -> [Int] {
        ensure(size <= population, "a subset of \(size) from \(population)")
        var order = Array(0 ..< population)
        for i in 0 ..< size {
            let j = i + Int(next() % UInt64(population - i))
            order.swapAt(i, j)
        }
        return Array(order[0 ..< size])
    }
}
