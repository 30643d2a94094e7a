/// A dense float32 tensor in row-major (NCHW for images) order, backed by 64-byte aligned memory.
///
/// Tensors are reference types so that preallocated buffers can be reused across
/// denoising steps without copying; callers that share one across threads must
/// not write to it concurrently.
public final class Tensor: @unchecked Sendable {
    /// The extent of each dimension, outermost first.
    public private(set) var shape: [Int]
    /// Number of elements the storage can hold (fixed at allocation).
    public let capacity: Int
    /// The elements, `count` of them valid.
    public let data: UnsafeMutablePointer<Float>

    /// Number of elements described by `shape`.
    public var count: Int { shape.reduce(1, *) }

    /// Allocates a zero-filled tensor of the given shape.
    public init(shape: [Int]) {
        ensure(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        let n = max(shape.reduce(1, *), 1)
        self.capacity = n
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * MemoryLayout<Float>.stride, alignment: 64)
        self.data = raw.bindMemory(to: Float.self, capacity: n)
        self.data.initialize(repeating: 0, count: n)
    }

    /// Allocates a tensor holding a copy of `values`.
    public convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        ensure(values.count == count, "\(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: $0.count) }
    }

    deinit { UnsafeMutableRawPointer(data).deallocate() }

    /// Changes the logical shape in place; the element count must fit the capacity.
    public func reshape(_ newShape: [Int]) {
        ensure(newShape.reduce(1, *) <= capacity, "shape \(newShape) exceeds capacity \(capacity)")
        shape = newShape
    }

    /// The valid elements as a buffer.
    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }

    /// A copy of the valid elements.
    public var array: [Float] { Array(buffer) }

    /// Sets every element to `value`.
    public func fill(_ value: Float) { data.update(repeating: value, count: count) }

    /// Copies the elements of `other` (same element count) into this tensor.
    public func copy(from other: Tensor) {
        ensure(other.count == count, "copy of \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
    }
}
