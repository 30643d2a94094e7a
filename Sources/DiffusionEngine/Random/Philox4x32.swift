/// The Philox 4x32-10 counter-based generator of Salmon et al. (Random123): a keyed bijection
/// from a 128-bit counter to 128 random bits.
public enum Philox4x32 {
    // Multipliers 0xD2511F53, 0xCD9E8D57; Weyl key increments 0x9E3779B9, 0xBB67AE85.

    /// The 10-round output block for `counter` under `key`.
    @inlinable
    public static func block(counter: SIMD4<UInt32>, key: SIMD2<UInt32>) -> SIMD4<UInt32> {
        var c = counter
        var k = key
        for round in 0..<10 {
            if round > 0 {
                k.x &+= 0x9E37_79B9
                k.y &+= 0xBB67_AE85
            }
            let p0 = UInt64(0xD251_1F53) &* UInt64(c.x)
            let p1 = UInt64(0xCD9E_8D57) &* UInt64(c.z)
            let hi0 = UInt32(truncatingIfNeeded: p0 >> 32), lo0 = UInt32(truncatingIfNeeded: p0)
            let hi1 = UInt32(truncatingIfNeeded: p1 >> 32), lo1 = UInt32(truncatingIfNeeded: p1)
            c = SIMD4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0)
        }
        return c
    }
}
