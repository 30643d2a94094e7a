/// SIMD helpers shared by the elementwise kernels: 16-lane float vectors, a polynomial exp,
/// SiLU and its derivative. Sums are written out explicitly so they can be reassociated.

typealias Vec = SIMD16<Float>

extension UnsafeMutablePointer where Pointee == Float {
    /// Loads 16 floats starting at element `i` (no alignment required).
    @inline(__always) func vec(_ i: Int) -> Vec {
        UnsafeRawPointer(self + i).loadUnaligned(as: Vec.self)
    }

    /// Stores 16 floats starting at element `i` (no alignment required).
    @inline(__always) func setVec(_ i: Int, _ v: Vec) {
        UnsafeMutableRawPointer(self + i).storeBytes(of: v, as: Vec.self)
    }
}

/// 16 floats rounded to bfloat16, nearest even (what oneDNN's f32 -> bf16 conversion does for finite values).
@inline(__always) func vbfloat16(_ v: Vec) -> SIMD16<UInt16> {
    let bits = unsafeBitCast(v, to: SIMD16<UInt32>.self)
    let rounded = bits &+ 0x7FFF &+ ((bits &>> 16) & 1)
    return SIMD16<UInt16>(truncatingIfNeeded: rounded &>> 16)
}

/// e^x for 16 lanes: range reduction by ln 2, degree-6 polynomial (fused multiply-adds), exponent by integer add.
/// Relative error about 2 ulp on [-87, 88]; inputs outside are clamped.
@inline(__always) func vexp(_ x: Vec) -> Vec {
    let magic = Vec(repeating: 12_582_912)                  // 1.5 * 2^23: rounds to an integer
    let xc = pointwiseMax(pointwiseMin(x, Vec(repeating: 88.3)), Vec(repeating: -87.3))
    let t = xc * 1.442_695_04 + magic
    let n = t - magic
    let r = (xc - n * 0.693_145_751_953_125) - n * 1.428_606_765_330_187e-6
    // Horner's scheme in fused multiply-adds.
    var p = Vec(repeating: 1.0 / 120.0).addingProduct(r, Vec(repeating: 1.0 / 720.0))
    p = Vec(repeating: 1.0 / 24.0).addingProduct(p, r)
    p = Vec(repeating: 1.0 / 6.0).addingProduct(p, r)
    p = Vec(repeating: 0.5).addingProduct(p, r)
    p = Vec(repeating: 1).addingProduct(p, r)
    p = Vec(repeating: 1).addingProduct(p, r)
    let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: Vec.self)
    return p * scale
}

/// x * sigmoid(x) for 16 lanes.
@inline(__always) func vsilu(_ x: Vec) -> Vec {
    x / (1 + vexp(-x))
}

/// d/dx [x * sigmoid(x)] for 16 lanes.
@inline(__always) func vsiluGrad(_ x: Vec) -> Vec {
    let s = 1 / (1 + vexp(-x))
    return s * (1 + x * (1 - s))
}

/// Scalar e^x through the same polynomial as `vexp`.
@inline(__always) func sexp(_ x: Float) -> Float { vexp(Vec(repeating: x))[0] }

/// Scalar SiLU.
@inline(__always) func ssilu(_ x: Float) -> Float { x / (1 + sexp(-x)) }

/// Scalar SiLU derivative.
@inline(__always) func ssiluGrad(_ x: Float) -> Float {
    let s = 1 / (1 + sexp(-x))
    return s * (1 + x * (1 - s))
}

/// Horizontal sum of 16 lanes as a balanced tree.
@inline(__always) func hsum(_ v: Vec) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    let c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

/// Lane-wise maximum as one compare and blend (the standard library's `pointwiseMax` and `max()`
/// go lane by lane through `Float.maximum` where neither operand is a constant). A NaN in `a` stays NaN.
@inline(__always) func lanewiseMax(_ a: Vec, _ b: Vec) -> Vec { a.replacing(with: b, where: a .< b) }

/// `lanewiseMax` on 8 lanes.
@inline(__always) func lanewiseMax(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: a .< b) }

/// `lanewiseMax` on 4 lanes.
@inline(__always) func lanewiseMax(_ a: SIMD4<Float>, _ b: SIMD4<Float>) -> SIMD4<Float> { a.replacing(with: b, where: a .< b) }

/// Horizontal maximum of 16 lanes as a tree of vector maxima.
@inline(__always) func hmax(_ v: Vec) -> Float {
    let a = lanewiseMax(v.lowHalf, v.highHalf)
    let b = lanewiseMax(a.lowHalf, a.highHalf)
    return max(max(b[0], b[1]), max(b[2], b[3]))
}
