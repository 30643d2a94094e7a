/// The attention layer of the ADM plans, over activations in oneDNN's blocked layout (see ADMRunners.swift).
/// Multi-head self-attention over pixels with a residual connection (guided-diffusion AttentionBlock).
final class AttentionRunner: LayerRunner {
    let p: AttentionParameters
    let ws: Workspace
    let batch: Int, tokens: Int
    let norm: GroupNormState
    let xn: Int, qkv: Int, probs: Int, attended: Int
    let gA: Int, gQKV: Int, gP: Int, gXn: Int
    let training: Bool
    private let perJobProbs: Bool

    init(_ p: AttentionParameters, batch: Int, size: Int, ws: Workspace, training: Bool) {
        self.p = p; self.ws = ws; self.batch = batch; self.tokens = size * size; self.training = training
        let n = batch, t = tokens, c = p.channels
        norm = GroupNormState(ws, batch: n, channels: c)
        xn = ws.buffer("attn.xn", n * t * c)
        qkv = ws.buffer("attn.qkv", n * t * 3 * c, keep: true)
        perJobProbs = training
        probs = training ? ws.buffer("attn.p", n * p.heads * t * t, keep: true)
                         : ws.buffer("attn.p", ComputeRuntime.dnnlThreads * t * t)
        attended = ws.buffer("attn.a", n * t * c)
        if training {
            gA = ws.buffer("grad.a", n * t * c); gQKV = ws.buffer("grad.qkv", n * t * 3 * c)
            gP = ws.buffer("grad.p", ComputeRuntime.dnnlThreads * t * t); gXn = ws.buffer("grad.xn", n * t * c)
        } else { gA = -1; gQKV = -1; gP = -1; gXn = -1 }
    }

    var flops: Double {
        let t = Double(tokens), c = Double(p.channels), n = Double(batch)
        return n * (2 * t * c * 3 * c + 2 * t * c * c + 2 * 2 * t * t * c)
    }

    /// Column offsets of q, k, v of `head` inside a qkv row.
    @inline(__always) private func offsets(_ head: Int) -> (Int, Int, Int) {
        let c = p.channels, hc = c / p.heads
        if p.legacyOrder { let q = head * 3 * hc; return (q, q + hc, q + 2 * hc) }
        return (head * hc, c + head * hc, 2 * c + head * hc)
    }

    /// Runs body(job, thread) for every (sample, head) pair, in parallel when OpenBLAS stays single-threaded.
    private func forEachJob(_ body: (Int, Int) -> Void) {
        let jobs = batch * p.heads, hc = p.channels / p.heads
        let threads = ComputeRuntime.dnnlThreads
        if threads > 1 && jobs > 1 && sgemmIsSingleThreaded(m: tokens, n: tokens, k: max(hc, tokens)) {
            parallelRegion(threads: min(threads, jobs)) { tid, nt in
                var j = tid
                while j < jobs { body(j, tid); j += nt }
            }
        } else {
            for j in 0..<jobs { body(j, 0) }
        }
    }

    func forward(_ x: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        let n = batch, t = tokens, c = p.channels, hc = c / p.heads
        norm.prepare(ws, p.norm, x, batch: n, pixels: t)
        norm.apply(ws, x, ws[xn], batch: n, pixels: t, channels: c, silu: false, nhwcOutput: true)
        linearForwardPerItem(ws[xn], items: n, rowsPerItem: t, inFeatures: c, outFeatures: 3 * c, weight: p.qkv.weight.data, bias: p.qkv.bias.data, ws[qkv])
        let scale = 1 / Float(hc).squareRoot()
        let qkvBase = ws[qkv], aBase = ws[attended], pBase = ws[probs]
        let heads = p.heads, perJob = perJobProbs
        forEachJob { job, tid in
            let b = job / heads, h = job % heads
            let (qo, ko, vo) = offsets(h)
            let rows = qkvBase + b * t * 3 * c
            let s = pBase + (perJob ? job : tid) * t * t
            sgemm(transB: true, m: t, n: t, k: hc, alpha: scale, a: rows + qo, lda: 3 * c, b: rows + ko, ldb: 3 * c, c: s, ldc: t)
            softmaxRows(s, rows: t, cols: t)
            sgemm(m: t, n: hc, k: t, a: s, lda: t, b: rows + vo, ldb: 3 * c, c: aBase + b * t * c + h * hc, ldc: c)
        }
        if out != x { copyKernel(x, out, count: n * t * c) }
        // proj_out into the (now free) normalised-input buffer, then the residual add in blocked layout.
        linearForwardPerItem(ws[attended], items: n, rowsPerItem: t, inFeatures: c, outFeatures: c, weight: p.proj.weight.data, bias: p.proj.bias.data, ws[xn])
        nhwcToBlocked(ws[xn], out, adding: out, batch: n, pixels: t, channels: c)
    }

    func backward(input x: UnsafeMutablePointer<Float>, dOutput dy: UnsafeMutablePointer<Float>, dInput dx: UnsafeMutablePointer<Float>, _ emb: EmbeddingContext) {
        let n = batch, t = tokens, c = p.channels, hc = c / p.heads
        copyKernel(dy, dx, count: n * t * c)
        blockedToNhwc(dy, ws[gXn], batch: n, pixels: t, channels: c)
        sgemmPerItem(items: n, rowsPerItem: t, n: c, k: c, a: ws[gXn], lda: c, b: p.proj.weight.data, ldb: c, c: ws[gA], ldc: c)
        let scale = 1 / Float(hc).squareRoot()
        let qkvBase = ws[qkv], pBase = ws[probs], daBase = ws[gA], dqkvBase = ws[gQKV], dpBase = ws[gP]
        let heads = p.heads
        forEachJob { job, tid in
            let b = job / heads, h = job % heads
            let (qo, ko, vo) = offsets(h)
            let rows = qkvBase + b * t * 3 * c, drows = dqkvBase + b * t * 3 * c
            let prob = pBase + job * t * t, dp = dpBase + tid * t * t
            let da = daBase + b * t * c + h * hc
            sgemm(transB: true, m: t, n: t, k: hc, a: da, lda: c, b: rows + vo, ldb: 3 * c, c: dp, ldc: t)
            sgemm(transA: true, m: t, n: hc, k: t, a: prob, lda: t, b: da, ldb: c, c: drows + vo, ldc: 3 * c)
            for r in 0..<t {
                var dot: Float = 0
                for j in 0..<t { dot += prob[r * t + j] * dp[r * t + j] }
                for j in 0..<t { dp[r * t + j] = prob[r * t + j] * (dp[r * t + j] - dot) }
            }
            sgemm(m: t, n: hc, k: t, alpha: scale, a: dp, lda: t, b: rows + ko, ldb: 3 * c, c: drows + qo, ldc: 3 * c)
            sgemm(transA: true, m: t, n: hc, k: t, alpha: scale, a: dp, lda: t, b: rows + qo, ldb: 3 * c, c: drows + ko, ldc: 3 * c)
        }
        sgemmPerItem(items: n, rowsPerItem: t, n: c, k: 3 * c, a: ws[gQKV], lda: 3 * c, b: p.qkv.weight.data, ldb: c, c: ws[gXn], ldc: c)
        nhwcToBlocked(ws[gXn], ws[gA], batch: n, pixels: t, channels: c)
        norm.backward(ws, x: x, dy: ws[gA], dx: dx, batch: n, pixels: t, channels: c, silu: false, accumulate: true)
    }
}
