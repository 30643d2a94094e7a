/// The number format a network's convolutions compute in.
///
/// `fp32` is the default and the reference. `bf16` runs every convolution over 16-channel blocks
/// (all but the network's first) through oneDNN's bfloat16 kernels, AMX (on channels-last copies)
/// or AVX512-BF16: inputs and
/// weights are rounded to bfloat16 (8 significant bits) and products accumulate in float32 into
/// float32 outputs. GroupNorm, attention, the embeddings and the sampler stay float32, as under
/// PyTorch's CPU autocast.
public enum ComputePrecision: String, Sendable, Codable, CaseIterable {
    case fp32, bf16

    /// Why this CPU cannot run the precision at full speed, nil when it can.
    public func unsupportedReason(on features: CPUFeatures) -> String? {
        switch self {
        case .fp32:
            return nil
        case .bf16:
            if features.amxBF16 || features.avx512BF16 { return nil }
            return "precision bf16 needs a CPU with AMX-BF16 or AVX512-BF16 (flags amx_bf16 or avx512_bf16); this one has "
                + (features.flagNames.isEmpty ? "neither (no AVX at all)" : "neither (\(features.flagNames.joined(separator: " ")))")
        }
    }

    /// For bf16 on a CPU that runs it without AMX, a caution for the log: there oneDNN runs bf16 as
    /// direct AVX512-BF16 convolutions, which can be slower than fp32's Winograd ones; nil otherwise.
    public func speedCaution(on features: CPUFeatures) -> String? {
        guard self == .bf16, unsupportedReason(on: features) == nil, !features.amxBF16 else { return nil }
        return "precision bf16 on this CPU (avx512_bf16, no amx_bf16) runs direct bfloat16 convolutions, "
            + "which can be slower than fp32's Winograd convolutions: measure both before choosing bf16 for speed"
    }

    /// For bf16: which kernels its convolutions run on a CPU with `features` (images regenerate bit
    /// for bit on a CPU whose bf16 convolutions run the same ones); nil for fp32.
    public func convolutionKernels(on features: CPUFeatures) -> String? {
        guard self == .bf16 else { return nil }
        return computesChannelsLast(on: features) ? "amx_bf16 tiles, channels-last" : "avx512_bf16, 16-channel blocks"
    }

    /// Whether the bf16 convolutions compute channels-last (AMX's kernels read and write nhwc only),
    /// so that the layers around them keep their float32 results in nhwc too.
    func computesChannelsLast(on features: CPUFeatures = .current) -> Bool {
        self == .bf16 && features.amxBF16
    }

    /// What the image records say ran: the convolution format, and float32 for the rest.
    public var recordName: String {
        switch self {
        case .fp32: "float32"
        case .bf16: "bfloat16 convolutions, float32 accumulation and everything else"
        }
    }
}
