/// Hyperparameters of guided-diffusion's `UNetModel` ("adm-unet") and `EncoderUNetModel`
/// ("adm-encoder"), decoded from a bundle's model.json "architecture" object (snake_case keys).
public struct ADMArchitecture: Codable, Sendable, Equatable {
    /// "adm-unet" or "adm-encoder".
    public var type: String
    /// Input height and width (square images).
    public var imageSize: Int
    /// Image channels in.
    public var inChannels: Int
    /// Channels out (2 x in with learned variance; classes for the encoder).
    public var outChannels: Int
    /// Base width `mc`.
    public var modelChannels: Int
    /// ResBlocks per level.
    public var numResBlocks: Int
    /// Downsample factors at which attention is applied.
    public var attentionResolutions: [Int]
    /// Width multipliers per level.
    public var channelMult: [Int]
    /// Classes of the label embedding, or nil when unconditional.
    public var numClasses: Int?
    /// Attention heads (used when numHeadChannels is -1).
    public var numHeads: Int
    /// Channels per attention head, or -1 to use numHeads.
    public var numHeadChannels: Int
    /// Heads in the output blocks (-1: same as numHeads).
    public var numHeadsUpsample: Int
    /// AdaGN: the timestep embedding scales and shifts the second GroupNorm.
    public var useScaleShiftNorm: Bool
    /// Resample with up/down ResBlocks instead of conv Upsample/Downsample.
    public var resblockUpdown: Bool
    /// Split q, k, v before heads (true) or per head (legacy, false).
    public var useNewAttentionOrder: Bool
    /// Encoder head: "adaptive" or "attention" (nil for the UNet).
    public var pool: String?
    /// Resample with a convolution when not using up/down ResBlocks (guided-diffusion default true).
    public var convResample: Bool

    enum CodingKeys: String, CodingKey {
        case type, pool
        case imageSize = "image_size", inChannels = "in_channels", outChannels = "out_channels"
        case modelChannels = "model_channels", numResBlocks = "num_res_blocks"
        case attentionResolutions = "attention_resolutions", channelMult = "channel_mult"
        case numClasses = "num_classes", numHeads = "num_heads", numHeadChannels = "num_head_channels"
        case numHeadsUpsample = "num_heads_upsample", useScaleShiftNorm = "use_scale_shift_norm"
        case resblockUpdown = "resblock_updown", useNewAttentionOrder = "use_new_attention_order"
        case convResample = "conv_resample"
    }

    /// Creates an architecture with guided-diffusion's defaults for the optional fields.
    public init(type: String = "adm-unet", imageSize: Int, inChannels: Int, outChannels: Int, modelChannels: Int,
                numResBlocks: Int, attentionResolutions: [Int], channelMult: [Int], numClasses: Int? = nil,
                numHeads: Int = 1, numHeadChannels: Int = -1, numHeadsUpsample: Int = -1,
                useScaleShiftNorm: Bool = false, resblockUpdown: Bool = false, useNewAttentionOrder: Bool = false,
                pool: String? = nil, convResample: Bool = true) {
        self.type = type; self.imageSize = imageSize; self.inChannels = inChannels; self.outChannels = outChannels
        self.modelChannels = modelChannels; self.numResBlocks = numResBlocks
        self.attentionResolutions = attentionResolutions; self.channelMult = channelMult; self.numClasses = numClasses
        self.numHeads = numHeads; self.numHeadChannels = numHeadChannels; self.numHeadsUpsample = numHeadsUpsample
        self.useScaleShiftNorm = useScaleShiftNorm; self.resblockUpdown = resblockUpdown
        self.useNewAttentionOrder = useNewAttentionOrder; self.pool = pool; self.convResample = convResample
    }

    /// Decodes model.json's snake_case object; absent optional fields take guided-diffusion's defaults.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        imageSize = try c.decode(Int.self, forKey: .imageSize)
        inChannels = try c.decode(Int.self, forKey: .inChannels)
        outChannels = try c.decode(Int.self, forKey: .outChannels)
        modelChannels = try c.decode(Int.self, forKey: .modelChannels)
        numResBlocks = try c.decode(Int.self, forKey: .numResBlocks)
        attentionResolutions = try c.decode([Int].self, forKey: .attentionResolutions)
        channelMult = try c.decode([Int].self, forKey: .channelMult)
        numClasses = try c.decodeIfPresent(Int.self, forKey: .numClasses)
        numHeads = try c.decodeIfPresent(Int.self, forKey: .numHeads) ?? 1
        numHeadChannels = try c.decodeIfPresent(Int.self, forKey: .numHeadChannels) ?? -1
        numHeadsUpsample = try c.decodeIfPresent(Int.self, forKey: .numHeadsUpsample) ?? -1
        useScaleShiftNorm = try c.decodeIfPresent(Bool.self, forKey: .useScaleShiftNorm) ?? false
        resblockUpdown = try c.decodeIfPresent(Bool.self, forKey: .resblockUpdown) ?? false
        useNewAttentionOrder = try c.decodeIfPresent(Bool.self, forKey: .useNewAttentionOrder) ?? false
        pool = try c.decodeIfPresent(String.self, forKey: .pool)
        convResample = try c.decodeIfPresent(Bool.self, forKey: .convResample) ?? true
    }
}

/// The plain CNN of kind "features": an ordered layer list.
public struct FeatureCNNArchitecture: Codable, Sendable, Equatable {
    /// One layer of the list.
    public struct Layer: Codable, Sendable, Equatable {
        /// "conv", "relu", "maxpool", "avgpool", "global_avgpool", "flatten", "linear" or "features".
        public var op: String
        /// Weight name prefix (conv, linear).
        public var name: String?
        /// Input channels / features.
        public var `in`: Int?
        /// Output channels / features.
        public var out: Int?
        /// Square kernel size (conv).
        public var kernel: Int?
        /// Zero padding (conv).
        public var padding: Int?
        /// Stride (conv; default 1).
        public var stride: Int?
        /// Window and stride (pooling).
        public var size: Int?

        /// Creates a layer description.
        public init(op: String, name: String? = nil, in: Int? = nil, out: Int? = nil, kernel: Int? = nil,
                    padding: Int? = nil, stride: Int? = nil, size: Int? = nil) {
            self.op = op; self.name = name; self.in = `in`; self.out = out; self.kernel = kernel
            self.padding = padding; self.stride = stride; self.size = size
        }
    }

    /// "feature-cnn".
    public var type: String
    /// Layers in order.
    public var layers: [Layer]

    /// Creates a feature CNN description.
    public init(type: String = "feature-cnn", layers: [Layer]) { self.type = type; self.layers = layers }
}

/// Any network architecture a bundle can describe, chosen by its "type" field.
public enum NetworkArchitecture: Codable, Sendable, Equatable {
    /// "adm-unet" or "adm-encoder".
    case adm(ADMArchitecture)
    /// "feature-cnn".
    case featureCNN(FeatureCNNArchitecture)

    private enum Key: String, CodingKey { case type }

    /// Decodes by the "type" field.
    public init(from decoder: any Decoder) throws {
        let type = try decoder.container(keyedBy: Key.self).decode(String.self, forKey: .type)
        switch type {
        case "adm-unet", "adm-encoder": self = .adm(try ADMArchitecture(from: decoder))
        case "feature-cnn": self = .featureCNN(try FeatureCNNArchitecture(from: decoder))
        default: throw EngineError.invalidArchitecture("unknown architecture type '\(type)'")
        }
    }

    /// Encodes the wrapped architecture.
    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .adm(let a): try a.encode(to: encoder)
        case .featureCNN(let f): try f.encode(to: encoder)
        }
    }
}
