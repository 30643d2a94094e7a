/// The buffers of one evaluation plan, allocated once when the plan is built.
///
/// Layers ask for buffers by slot name while the plan is assembled; requests for the same
/// name share one buffer sized to the largest request. With `keepIntermediates` (gradient
/// plans) a request marked `keep` gets a private buffer so the backward pass can read it.
final class Workspace {
    let keepIntermediates: Bool
    private var sizes: [Int] = []
    private var slots: [String: Int] = [:]
    private var storage: [UnsafeMutablePointer<Float>] = []

    init(keepIntermediates: Bool) { self.keepIntermediates = keepIntermediates }

    /// A handle to a buffer of at least `count` floats.
    func buffer(_ name: String, _ count: Int, keep: Bool = false) -> Int {
        if keep && keepIntermediates { return privateBuffer(count) }
        if let h = slots[name] { sizes[h] = max(sizes[h], count); return h }
        let h = privateBuffer(count)
        slots[name] = h
        return h
    }

    /// A handle to a buffer nobody else uses.
    func privateBuffer(_ count: Int) -> Int {
        sizes.append(count)
        return sizes.count - 1
    }

    /// Allocates every buffer (zero-filled, 64-byte aligned).
    func allocate() {
        ensure(storage.isEmpty)
        storage = sizes.map { n in
            let p = UnsafeMutableRawPointer.allocate(byteCount: max(n, 16) * 4, alignment: 64).bindMemory(to: Float.self, capacity: max(n, 16))
            p.initialize(repeating: 0, count: max(n, 16))
            return p
        }
    }

    /// Total floats held.
    var floatCount: Int { sizes.reduce(0) { $0 + max($1, 16) } }

    /// The buffer behind a handle.
    @inline(__always) subscript(_ handle: Int) -> UnsafeMutablePointer<Float> { storage[handle] }

    deinit { for p in storage { p.deallocate() } }
}

/// The per-sample conditioning passed to every ResBlock: the batched emb projections.
struct EmbeddingContext {
    /// [batch, stride] floats: every ResBlock's emb_layers output side by side.
    let values: UnsafePointer<Float>
    let stride: Int
}
