import Foundation

/// Standard normal noise from Philox 4x32-10 and the Box-Muller transform.
///
/// Key = (seed low 32 bits, seed high 32 bits). Element j of image i at draw k comes from the
/// block with counter (j / 4, i low 32 bits, k, i high 32 bits), lane j % 4. Each block's four words
/// become uniforms u = (word + 0.5) / 2^32 in (0, 1); lanes (0, 1) and (2, 3) are Box-Muller pairs:
/// r = sqrt(-2 ln u_a), z_a = r cos(2 pi u_b), z_b = r sin(2 pi u_b), computed in float64, rounded to float32.
public struct PhiloxNormalSource: RandomSource, Hashable {
    /// The 64-bit job seed.
    public let seed: UInt64

    /// Creates the source for a job seed.
    public init(seed: UInt64) { self.seed = seed }

    /// The four standard normals of one Philox block.
    @inline(__always)
    static func normals(_ bits: SIMD4<UInt32>) -> (Double, Double, Double, Double) {
        let scale = 1.0 / 4_294_967_296.0
        let u0 = (Double(bits.x) + 0.5) * scale, u1 = (Double(bits.y) + 0.5) * scale
        let u2 = (Double(bits.z) + 0.5) * scale, u3 = (Double(bits.w) + 0.5) * scale
        let r0 = (-2 * log(u0)).squareRoot(), a0 = 2 * Double.pi * u1
        let r1 = (-2 * log(u2)).squareRoot(), a1 = 2 * Double.pi * u3
        return (r0 * cos(a0), r0 * sin(a0), r1 * cos(a1), r1 * sin(a1))
    }

    /// Fills `destination` with normals for element indices 0..<count of (image, draw).
    public func fillStandardNormal(_ destination: UnsafeMutableBufferPointer<Float>, image: Int, draw: Int) {
        ensure(image >= 0 && draw >= 0 && draw <= Int(UInt32.max), "image and draw must be non-negative (draw < 2^32)")
        ensure(destination.count <= 4 * (Int(UInt32.max) + 1), "too many elements for one Philox stream")
        let key = SIMD2(UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
        let imageLow = UInt32(truncatingIfNeeded: image), imageHigh = UInt32(truncatingIfNeeded: image >> 32)
        let n = destination.count
        guard let out = destination.baseAddress else { return }
        var j = 0
        var block: UInt32 = 0
        while j < n {
            let z = Self.normals(Philox4x32.block(counter: SIMD4(block, imageLow, UInt32(draw), imageHigh), key: key))
            out[j] = Float(z.0)
            if j + 1 < n { out[j + 1] = Float(z.1) }
            if j + 2 < n { out[j + 2] = Float(z.2) }
            if j + 3 < n { out[j + 3] = Float(z.3) }
            j += 4
            block &+= 1
        }
    }
}
