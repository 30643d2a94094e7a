import Testing
@testable import DiffusionEngine

@Suite struct TensorTests {
    @Test func reshapeKeepsValues() {
        let t = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        t.reshape([3, 2])
        #expect(t.shape == [3, 2])
        #expect(t.array == [1, 2, 3, 4, 5, 6])
    }
}
