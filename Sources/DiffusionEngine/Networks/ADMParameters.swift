/// Weights of the building blocks of guided-diffusion networks, read by state-dict key.

/// GroupNorm affine parameters (32 groups).
struct GroupNormParameters {
    let channels: Int
    let gamma: Tensor, beta: Tensor

    init(_ r: WeightReader, _ prefix: String, channels: Int) throws {
        guard channels % 32 == 0 else { throw EngineError.invalidArchitecture("GroupNorm '\(prefix)' over \(channels) channels (needs a multiple of 32)") }
        self.channels = channels
        gamma = try r.take(prefix + ".weight", [channels])
        beta = try r.take(prefix + ".bias", [channels])
    }
}

/// A 2-D convolution's OIHW weights and bias.
struct ConvParameters {
    let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int
    let weight: Tensor, bias: Tensor?

    init(_ r: WeightReader, _ prefix: String, in i: Int, out o: Int, kernel k: Int, stride s: Int = 1, padding p: Int, bias: Bool = true) throws {
        inChannels = i; outChannels = o; kernel = k; stride = s; padding = p
        weight = try r.take(prefix + ".weight", [o, i, k, k])
        self.bias = bias ? try r.take(prefix + ".bias", [o]) : nil
    }
}

/// A linear map (or 1x1 Conv1d) with weight [out, in] and bias [out].
struct LinearParameters {
    let inFeatures: Int, outFeatures: Int
    let weight: Tensor, bias: Tensor

    init(_ r: WeightReader, _ prefix: String, in i: Int, out o: Int, conv1d: Bool = false) throws {
        inFeatures = i; outFeatures = o
        weight = try r.take(prefix + ".weight", conv1d ? [o, i, 1] : [o, i])
        bias = try r.take(prefix + ".bias", [o])
    }
}

/// A guided-diffusion ResBlock.
final class ResBlockParameters {
    let inChannels: Int, outChannels: Int
    let scaleShift: Bool, up: Bool, down: Bool
    let norm1: GroupNormParameters, conv1: ConvParameters
    let emb: LinearParameters
    let norm2: GroupNormParameters, conv2: ConvParameters
    let skip: ConvParameters?
    /// Column of this block's emb_layers output inside the batched projection.
    var embOffset = 0

    init(_ r: WeightReader, _ p: String, in i: Int, out o: Int, embChannels: Int, scaleShift: Bool, up: Bool = false, down: Bool = false) throws {
        inChannels = i; outChannels = o; self.scaleShift = scaleShift; self.up = up; self.down = down
        norm1 = try GroupNormParameters(r, p + ".in_layers.0", channels: i)
        conv1 = try ConvParameters(r, p + ".in_layers.2", in: i, out: o, kernel: 3, padding: 1)
        emb = try LinearParameters(r, p + ".emb_layers.1", in: embChannels, out: scaleShift ? 2 * o : o)
        norm2 = try GroupNormParameters(r, p + ".out_layers.0", channels: o)
        conv2 = try ConvParameters(r, p + ".out_layers.3", in: o, out: o, kernel: 3, padding: 1)
        skip = i == o ? nil : try ConvParameters(r, p + ".skip_connection", in: i, out: o, kernel: 1, padding: 0)
    }
}

/// A guided-diffusion AttentionBlock.
final class AttentionParameters {
    let channels: Int, heads: Int, legacyOrder: Bool
    let norm: GroupNormParameters
    let qkv: LinearParameters, proj: LinearParameters

    init(_ r: WeightReader, _ p: String, channels c: Int, numHeads: Int, numHeadChannels: Int, newOrder: Bool) throws {
        channels = c
        if numHeadChannels == -1 {
            heads = numHeads
        } else {
            guard numHeadChannels > 0, c % numHeadChannels == 0 else {
                throw EngineError.invalidArchitecture("\(c) channels not divisible by num_head_channels \(numHeadChannels)")
            }
            heads = c / numHeadChannels
        }
        guard heads > 0, c % heads == 0 else { throw EngineError.invalidArchitecture("\(c) channels not divisible into \(heads) heads") }
        legacyOrder = !newOrder
        norm = try GroupNormParameters(r, p + ".norm", channels: c)
        qkv = try LinearParameters(r, p + ".qkv", in: c, out: 3 * c, conv1d: true)
        proj = try LinearParameters(r, p + ".proj_out", in: c, out: c, conv1d: true)
    }
}

/// One layer inside a TimestepEmbedSequential block.
enum ADMLayer {
    case conv(ConvParameters)
    case res(ResBlockParameters)
    case attention(AttentionParameters)
    /// Nearest 2x, then an optional 3x3 conv.
    case upsample(ConvParameters?, channels: Int)
    /// 3x3 stride-2 conv, or 2x2 average pooling when nil.
    case downsample(ConvParameters?, channels: Int)
}

/// One TimestepEmbedSequential block with the geometry of its input.
struct ADMBlock {
    var layers: [ADMLayer]
    var inChannels: Int, outChannels: Int
    var size: Int          // input height = width
    var outSize: Int
}

/// The shared trunk of UNetModel and EncoderUNetModel: timestep/label embedding, input
/// blocks, middle block and (for the UNet) output blocks, with every ResBlock's emb
/// projection concatenated into one matrix so all are computed by a single product.
final class ADMTrunk {
    let arch: ADMArchitecture
    let embChannels: Int
    let timeEmbed0: LinearParameters, timeEmbed2: LinearParameters
    let labelEmbedding: Tensor?
    var inputBlocks: [ADMBlock] = []
    var middle: ADMBlock
    var outputBlocks: [ADMBlock] = []
    /// The channel count after the last block (input of the head).
    var finalChannels: Int
    /// Concatenated emb_layers weights [total, embChannels] and biases.
    let embWeight: Tensor, embBias: Tensor
    let embTotal: Int

    init(_ a: ADMArchitecture, _ r: WeightReader, withOutputBlocks: Bool) throws {
        arch = a
        let mc = a.modelChannels
        guard mc > 0, mc % 2 == 0, a.numResBlocks > 0, !a.channelMult.isEmpty, a.inChannels > 0, a.imageSize > 0 else {
            throw EngineError.invalidArchitecture("model_channels, num_res_blocks, channel_mult, in_channels and image_size must be positive")
        }
        let embC = 4 * mc
        embChannels = embC
        timeEmbed0 = try LinearParameters(r, "time_embed.0", in: mc, out: embChannels)
        timeEmbed2 = try LinearParameters(r, "time_embed.2", in: embChannels, out: embChannels)
        if withOutputBlocks, let k = a.numClasses {
            labelEmbedding = try r.take("label_emb.weight", [k, embChannels])
        } else { labelEmbedding = nil }
        let attn = Set(a.attentionResolutions)
        var resBlocks: [ResBlockParameters] = []
        func res(_ p: String, _ i: Int, _ o: Int, up: Bool = false, down: Bool = false) throws -> ResBlockParameters {
            let b = try ResBlockParameters(r, p, in: i, out: o, embChannels: embC, scaleShift: a.useScaleShiftNorm, up: up, down: down)
            resBlocks.append(b)
            return b
        }
        func attention(_ p: String, _ c: Int, heads: Int) throws -> AttentionParameters {
            try AttentionParameters(r, p, channels: c, numHeads: heads, numHeadChannels: a.numHeadChannels, newOrder: a.useNewAttentionOrder)
        }

        var ch = mc * a.channelMult[0]
        var size = a.imageSize
        var ds = 1
        inputBlocks.append(ADMBlock(layers: [.conv(try ConvParameters(r, "input_blocks.0.0", in: a.inChannels, out: ch, kernel: 3, padding: 1))],
                                    inChannels: a.inChannels, outChannels: ch, size: size, outSize: size))
        var chans = [ch]
        for (level, mult) in a.channelMult.enumerated() {
            for _ in 0..<a.numResBlocks {
                let k = inputBlocks.count, o = mult * mc
                var layers: [ADMLayer] = [.res(try res("input_blocks.\(k).0", ch, o))]
                if attn.contains(ds) { layers.append(.attention(try attention("input_blocks.\(k).1", o, heads: a.numHeads))) }
                inputBlocks.append(ADMBlock(layers: layers, inChannels: ch, outChannels: o, size: size, outSize: size))
                ch = o
                chans.append(ch)
            }
            if level != a.channelMult.count - 1 {
                guard size % 2 == 0 else { throw EngineError.invalidArchitecture("image size \(a.imageSize) cannot be halved \(a.channelMult.count - 1) times") }
                let k = inputBlocks.count
                let layer: ADMLayer = a.resblockUpdown
                    ? .res(try res("input_blocks.\(k).0", ch, ch, down: true))
                    : .downsample(a.convResample ? try ConvParameters(r, "input_blocks.\(k).0.op", in: ch, out: ch, kernel: 3, stride: 2, padding: 1) : nil, channels: ch)
                inputBlocks.append(ADMBlock(layers: [layer], inChannels: ch, outChannels: ch, size: size, outSize: size / 2))
                size /= 2
                ds *= 2
                chans.append(ch)
            }
        }
        middle = ADMBlock(layers: [.res(try res("middle_block.0", ch, ch)),
                                   .attention(try attention("middle_block.1", ch, heads: a.numHeads)),
                                   .res(try res("middle_block.2", ch, ch))],
                          inChannels: ch, outChannels: ch, size: size, outSize: size)
        if withOutputBlocks {
            let headsUp = a.numHeadsUpsample == -1 ? a.numHeads : a.numHeadsUpsample
            for (level, mult) in a.channelMult.enumerated().reversed() {
                for i in 0...a.numResBlocks {
                    let k = outputBlocks.count, skip = chans.removeLast(), o = mc * mult
                    var layers: [ADMLayer] = [.res(try res("output_blocks.\(k).0", ch + skip, o))]
                    let inC = ch + skip
                    ch = o
                    if attn.contains(ds) { layers.append(.attention(try attention("output_blocks.\(k).1", ch, heads: headsUp))) }
                    var outSize = size
                    if level != 0 && i == a.numResBlocks {
                        let idx = layers.count
                        layers.append(a.resblockUpdown
                            ? .res(try res("output_blocks.\(k).\(idx)", ch, ch, up: true))
                            : .upsample(a.convResample ? try ConvParameters(r, "output_blocks.\(k).\(idx).conv", in: ch, out: ch, kernel: 3, padding: 1) : nil, channels: ch))
                        outSize = size * 2
                        ds /= 2
                    }
                    outputBlocks.append(ADMBlock(layers: layers, inChannels: inC, outChannels: ch, size: size, outSize: outSize))
                    size = outSize
                }
            }
        }
        finalChannels = ch

        var offset = 0
        for b in resBlocks { b.embOffset = offset; offset += b.emb.outFeatures }
        embTotal = offset
        embWeight = Tensor(shape: [offset, embChannels])
        embBias = Tensor(shape: [offset])
        for b in resBlocks {
            (embWeight.data + b.embOffset * embChannels).update(from: b.emb.weight.data, count: b.emb.outFeatures * embChannels)
            (embBias.data + b.embOffset).update(from: b.emb.bias.data, count: b.emb.outFeatures)
        }
    }

    /// Chains of (block index, skip channels) the UNet's output blocks concatenate.
    var skipChannels: [Int] { inputBlocks.map(\.outChannels) }
}
