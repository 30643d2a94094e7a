/// A source of reproducible standard normal noise addressed by (image, draw, element).
///
/// Element j of `fillStandardNormal(_, image: i, draw: k)` must be a pure function of the
/// source's seed, i, k and j, so that noise never depends on batch size, batch position or
/// where a job was resumed. The sampling pipeline uses draw 0 for the initial state and
/// draw k + 1 for the noise of chain step k.
public protocol RandomSource: Sendable {
    /// Fills `destination` with standard normals for element indices 0..<destination.count.
    func fillStandardNormal(_ destination: UnsafeMutableBufferPointer<Float>, image: Int, draw: Int)
}
