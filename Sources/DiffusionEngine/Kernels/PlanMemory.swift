import CDNNL

/// Memory the primitives of a plan share: scratch space, and reordered weights that several
/// plans may share (see Convolution+DNNL.swift).

/// Convolution weights reordered into oneDNN's layout, kept once for plans that build the same
/// convolutions the same way (the UNet's lanes: one plan per lane, one copy of the weights, read
/// by every lane). Each primitive of such a plan holds the cache, which frees the copies last.
final class ConvolutionWeightCache {
    private var entries: [(source: UnsafePointer<Float>, layout: dnnl_memory_desc_t, storage: UnsafeMutableRawPointer)] = []

    /// How many reordered copies the cache holds.
    var count: Int { entries.count }

    /// The reordered copy of `source` in `layout`, when a primitive made one.
    func storage(for source: UnsafePointer<Float>, layout: UnsafePointer<dnnl_memory_desc_t>) -> UnsafeMutableRawPointer? {
        for i in entries.indices where entries[i].source == source {
            if withUnsafePointer(to: &entries[i].layout, { dnnl_memory_desc_equal($0, layout) }) != 0 { return entries[i].storage }
        }
        return nil
    }

    /// Keeps `storage` (allocated by the caller, freed by the cache) as the copy of `source` in `layout`.
    func insert(_ storage: UnsafeMutableRawPointer, for source: UnsafePointer<Float>, layout: UnsafePointer<dnnl_memory_desc_t>) {
        entries.append((source, layout.pointee, storage))
    }

    deinit { for e in entries { e.storage.deallocate() } }
}

/// Scratch memory that grows to the largest request and is reused by every primitive of a plan.
final class ScratchArena {
    private(set) var pointer: UnsafeMutableRawPointer?
    private(set) var bytes = 0
    /// A second region, for a convolution's input converted to bfloat16 (alive during the call).
    private(set) lazy var converted: ScratchArena = ScratchArena()
    /// A third, for an AMX convolution's float32 channels-last result before its reorder.
    private(set) lazy var channelsLastOutput: ScratchArena = ScratchArena()
    /// Where the plan's convolutions share their reordered weights with other plans' (nil: each keeps its own).
    let sharedWeights: ConvolutionWeightCache?

    init(sharedWeights: ConvolutionWeightCache? = nil) { self.sharedWeights = sharedWeights }

    /// Ensures at least `size` bytes (only allocates while planning).
    func reserve(_ size: Int) {
        guard size > bytes else { return }
        pointer?.deallocate()
        pointer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        bytes = size
    }

    deinit { pointer?.deallocate() }
}
