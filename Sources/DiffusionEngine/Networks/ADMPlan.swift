import Foundation

/// One step of a plan: a layer from one buffer to another, or a channel concatenation.
enum PlanStep {
    case layer(any LayerRunner, input: Int, output: Int)
    case concat(a: Int, ca: Int, b: Int, cb: Int, rows: Int, output: Int)
}

/// Builds runners for the layers of ADM blocks.
struct ADMPlanBuilder {
    let ws: Workspace
    let scratch: ScratchArena
    let batch: Int
    let training: Bool
    let precision: ComputePrecision

    func runner(_ layer: ADMLayer, size: Int) -> any LayerRunner {
        switch layer {
        case .conv(let c): ConvRunner(c, batch: batch, size: size, scratch: scratch, training: training, inputLayout: .nchw, ws: ws)
        case .res(let r): ResBlockRunner(r, batch: batch, size: size, ws: ws, scratch: scratch, training: training, precision: precision)
        case .attention(let a): AttentionRunner(a, batch: batch, size: size, ws: ws, training: training)
        case .upsample(let c, let ch): UpsampleRunner(c, channels: ch, batch: batch, size: size, ws: ws, scratch: scratch, precision: precision)
        case .downsample(let c, let ch):
            c.map { ConvRunner($0, batch: batch, size: size, scratch: scratch, training: training, precision: precision) }
                ?? AvgPoolRunner(channels: ch, batch: batch, size: size)
        }
    }

    /// Appends the steps of `block` reading `input`; returns the handle holding its output.
    /// Attention runs in place at inference; with saved intermediates every layer gets its own output.
    func append(_ block: ADMBlock, input: Int, output: Int, steps: inout [PlanStep], flops: inout Double) -> Int {
        var current = input
        var size = block.size
        var channels = block.inChannels
        for (index, layer) in block.layers.enumerated() {
            let r = runner(layer, size: size)
            flops += r.flops
            var outSize = size, outChannels = channels
            switch layer {
            case .conv(let c): outChannels = c.outChannels; outSize = (size + 2 * c.padding - c.kernel) / c.stride + 1
            case .res(let p): outChannels = p.outChannels; outSize = p.up ? 2 * size : p.down ? size / 2 : size
            case .attention: break
            case .upsample: outSize = 2 * size
            case .downsample: outSize = size / 2
            }
            let count = batch * outSize * outSize * outChannels
            let restAreAttention = block.layers[(index + 1)...].allSatisfy { if case .attention = $0 { true } else { false } }
            let target: Int
            if training {
                target = ws.privateBuffer(count)
            } else if case .attention = layer, !(restAreAttention && current != output) {
                target = current
            } else if restAreAttention {
                target = output
            } else {
                target = ws.buffer("block.mid\(index % 2)", count)
            }
            steps.append(.layer(r, input: current, output: target))
            current = target
            size = outSize; channels = outChannels
        }
        return current
    }
}

/// Shared forward machinery of the UNet and the encoder: embeddings and the step list.
final class ADMPlan {
    let batch: Int
    let ws: Workspace
    let scratch: ScratchArena
    var steps: [PlanStep] = []
    var flops: Double = 0
    /// NCHW network input, the trunk's final (blocked) activation, and embedding buffers.
    var input = 0, trunkOutput = 0
    let tEmb: Int, hidden: Int, emb: Int, embSiLU: Int, embOut: Int

    /// With `sharedWeights` the plan's convolutions take their reordered weights from (and leave
    /// them in) that cache instead of keeping their own.
    init(trunk: ADMTrunk, batch: Int, training: Bool, precision: ComputePrecision = .fp32, sharedWeights: ConvolutionWeightCache? = nil) {
        self.batch = batch
        scratch = ScratchArena(sharedWeights: sharedWeights)
        ws = Workspace(keepIntermediates: training)
        let a = trunk.arch, e = trunk.embChannels
        tEmb = ws.privateBuffer(batch * a.modelChannels)
        hidden = ws.privateBuffer(batch * e)
        emb = ws.privateBuffer(batch * e)
        embSiLU = ws.privateBuffer(batch * e)
        embOut = ws.privateBuffer(batch * max(trunk.embTotal, 1))
        embOutStride = max(trunk.embTotal, 1)
        input = ws.privateBuffer(batch * a.inChannels * a.imageSize * a.imageSize)
        let builder = ADMPlanBuilder(ws: ws, scratch: scratch, batch: batch, training: training, precision: precision)
        var skips: [(Int, Int, Int)] = []   // handle, channels, size
        var current = input
        for block in trunk.inputBlocks {
            let out = training ? -1 : ws.privateBuffer(batch * block.outSize * block.outSize * block.outChannels)
            current = builder.append(block, input: current, output: out, steps: &steps, flops: &flops)
            skips.append((current, block.outChannels, block.outSize))
        }
        current = builder.append(trunk.middle, input: current, output: training ? -1 : ws.buffer("middle", batch * trunk.middle.outSize * trunk.middle.outSize * trunk.middle.outChannels), steps: &steps, flops: &flops)
        var channels = trunk.middle.outChannels
        for (k, block) in trunk.outputBlocks.enumerated() {
            let (skip, sc, size) = skips.removeLast()
            let cat = ws.buffer("concat", batch * size * size * (channels + sc))
            steps.append(.concat(a: current, ca: channels, b: skip, cb: sc, rows: batch * size * size, output: cat))
            current = builder.append(block, input: cat, output: ws.buffer("out\(k % 2)", batch * block.outSize * block.outSize * block.outChannels), steps: &steps, flops: &flops)
            channels = block.outChannels
        }
        trunkOutput = current
        // time_embed and label_emb linears.
        flops += Double(batch) * 2 * Double(a.modelChannels * e + e * e + trunk.embTotal * e)
    }

    /// Computes emb = time_embed(timestep_embedding(t)) (+ label_emb[y]) and every ResBlock's projection.
    func embed(trunk: ADMTrunk, timesteps: [Int], classes: [Int]?) {
        let mc = trunk.arch.modelChannels, e = trunk.embChannels, half = mc / 2
        let t = ws[tEmb]
        for n in 0..<batch {
            let tv = Float(timesteps[n])
            for i in 0..<half {
                // float32 throughout, as the reference computes it
                let freq = Foundation.exp(Float(-log(10_000.0)) * Float(i) / Float(half))
                let arg = tv * freq
                t[n * mc + i] = cos(arg)
                t[n * mc + half + i] = sin(arg)
            }
        }
        linearForwardPerItem(t, items: batch, rowsPerItem: 1, inFeatures: mc, outFeatures: e, weight: trunk.timeEmbed0.weight.data, bias: trunk.timeEmbed0.bias.data, ws[hidden])
        siluKernel(ws[hidden], ws[hidden], count: batch * e)
        linearForwardPerItem(ws[hidden], items: batch, rowsPerItem: 1, inFeatures: e, outFeatures: e, weight: trunk.timeEmbed2.weight.data, bias: trunk.timeEmbed2.bias.data, ws[emb])
        if let table = trunk.labelEmbedding, let classes {
            for n in 0..<batch {
                let row = table.data + classes[n] * e
                for j in 0..<e { ws[emb][n * e + j] += row[j] }
            }
        }
        siluKernel(ws[emb], ws[embSiLU], count: batch * e)
        if trunk.embTotal > 0 {
            linearForwardPerItem(ws[embSiLU], items: batch, rowsPerItem: 1, inFeatures: e, outFeatures: trunk.embTotal, weight: trunk.embWeight.data, bias: trunk.embBias.data, ws[embOut])
        }
    }

    var embedding: EmbeddingContext { EmbeddingContext(values: ws[embOut], stride: embOutStride) }
    let embOutStride: Int

    /// Runs every step in order.
    func runForward() {
        let e = embedding
        for step in steps {
            switch step {
            case .layer(let r, let i, let o): r.forward(ws[i], ws[o], e)
            case .concat(let a, let ca, let b, let cb, let rows, let o): concatBlocked(ws[a], ca, ws[b], cb, ws[o], batch: batch, pixels: rows / batch)
            }
        }
    }
}
