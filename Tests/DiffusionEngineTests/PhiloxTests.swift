import Foundation
import Testing
@testable import DiffusionEngine

@Suite struct PhiloxTests {
    @Test func random123KnownAnswers() {
        #expect(Philox4x32.block(counter: .zero, key: .zero) == SIMD4(0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8))
        #expect(Philox4x32.block(counter: SIMD4(repeating: 0xffff_ffff), key: SIMD2(repeating: 0xffff_ffff))
                == SIMD4(0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd))
        #expect(Philox4x32.block(counter: SIMD4(0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344),
                                 key: SIMD2(0xa409_3822, 0x299f_31d0))
                == SIMD4(0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1))
    }

    @Test func normalsArePureFunctionsOfTheirAddress() {
        let source = PhiloxNormalSource(seed: 0x1234_5678_9abc_def0)
        var long = [Float](repeating: 0, count: 103)
        var short = [Float](repeating: 0, count: 10)
        long.withUnsafeMutableBufferPointer { source.fillStandardNormal($0, image: 7, draw: 3) }
        short.withUnsafeMutableBufferPointer { source.fillStandardNormal($0, image: 7, draw: 3) }
        #expect(Array(long.prefix(10)) == short)
        var other = [Float](repeating: 0, count: 10)
        other.withUnsafeMutableBufferPointer { source.fillStandardNormal($0, image: 8, draw: 3) }
        #expect(other != short)
        other.withUnsafeMutableBufferPointer { source.fillStandardNormal($0, image: 7, draw: 4) }
        #expect(other != short)
        other.withUnsafeMutableBufferPointer { PhiloxNormalSource(seed: 1).fillStandardNormal($0, image: 7, draw: 3) }
        #expect(other != short)
        // Element 0 by hand: Box-Muller on the first block.
        let bits = Philox4x32.block(counter: SIMD4(0, 7, 3, 0), key: SIMD2(0x9abc_def0, 0x1234_5678))
        let u0 = (Double(bits.x) + 0.5) / 4_294_967_296, u1 = (Double(bits.y) + 0.5) / 4_294_967_296
        #expect(short[0] == Float((-2 * log(u0)).squareRoot() * cos(2 * Double.pi * u1)))
        #expect(short[1] == Float((-2 * log(u0)).squareRoot() * sin(2 * Double.pi * u1)))
    }

    @Test func normalsHaveUnitMoments() {
        var z = [Float](repeating: 0, count: 200_000)
        z.withUnsafeMutableBufferPointer { PhiloxNormalSource(seed: 42).fillStandardNormal($0, image: 0, draw: 0) }
        let n = Double(z.count)
        let mean = z.reduce(0.0) { $0 + Double($1) } / n
        let variance = z.reduce(0.0) { $0 + Double($1) * Double($1) } / n - mean * mean
        let fourth = z.reduce(0.0) { $0 + pow(Double($1), 4) } / n
        #expect(abs(mean) < 0.01)
        #expect(abs(variance - 1) < 0.015)
        #expect(abs(fourth - 3) < 0.1)
    }
}
