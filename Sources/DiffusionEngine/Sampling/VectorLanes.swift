import Foundation

/// Helpers for the SIMD16 elementwise loops of the samplers.
enum VectorLanes {
    typealias Vector = SIMD16<Float>

    /// Loads `count` (at most 16) floats, zero-filling the rest.
    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ count: Int) -> Vector {
        if count >= 16 { return UnsafeRawPointer(p).loadUnaligned(as: Vector.self) }
        var v = Vector(repeating: 0)
        for j in 0..<count { v[j] = p[j] }
        return v
    }

    /// Stores the first `count` (at most 16) lanes.
    @inline(__always)
    static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>, _ count: Int) {
        if count >= 16 { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self); return }
        for j in 0..<count { p[j] = v[j] }
    }

    /// Clamps every lane to [-1, 1].
    @inline(__always)
    static func clampUnit(_ v: Vector) -> Vector {
        pointwiseMin(pointwiseMax(v, Vector(repeating: -1)), Vector(repeating: 1))
    }

    /// exp of every lane (libm, lane by lane).
    @inline(__always)
    static func exp(_ v: Vector) -> Vector {
        var r = Vector()
        for j in 0..<16 { r[j] = Float.exp(v[j]) }
        return r
    }
}

extension Float {
    @inline(__always)
    static func exp(_ x: Float) -> Float { Foundation.expf(x) }
}
