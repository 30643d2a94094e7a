/// How float pixel values become integers.
public enum PixelRounding: Sendable, Hashable {
    /// Round to nearest, halves away from zero (so p / 127.5 - 1 maps back to p exactly).
    case nearest
    /// Truncate toward zero, as PyTorch's `.to(torch.uint8)` after the clamp (guided-diffusion's image export).
    case towardZero
}

extension Tensor {
    /// The elements as 8-bit pixels: clamp((x + 1) * 127.5, 0, 255), rounded as asked (NaN gives 0).
    public func pixelBytes(rounding: PixelRounding = .nearest) -> [UInt8] {
        let source = buffer
        return [UInt8](unsafeUninitializedCapacity: source.count) { out, initialized in
            for i in 0..<source.count {
                let v = (source[i] + 1) * 127.5
                let clamped = v.isNaN ? 0 : Swift.min(Swift.max(v, 0), 255)
                out[i] = UInt8(rounding == .nearest ? clamped.rounded(.toNearestOrAwayFromZero) : clamped.rounded(.towardZero))
            }
            initialized = source.count
        }
    }
}
