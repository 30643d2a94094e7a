import Foundation
import Testing
@testable import DiffusionEngine

@Suite struct TimestepRespacingTests {
    func steps(_ spec: String, _ t: Int = 1000) throws -> [Int] {
        try TimestepRespacing(parsing: spec).timesteps(trainingSteps: t)
    }

    @Test func ddimStride() throws {
        #expect(try steps("ddim50") == Array(stride(from: 0, to: 1000, by: 20)))
        #expect(try steps("ddim25") == Array(stride(from: 0, to: 1000, by: 40)))
        // Smallest stride with exactly N entries: 1000 / 3 needs stride 334 (0, 334, 668).
        #expect(try steps("ddim3") == [0, 334, 668])
        #expect(throws: SamplingError.self) { try steps("ddim999") }
    }

    @Test func sectionCounts() throws {
        let fifty = try steps("50")
        #expect(fifty.count == 50)
        #expect(Array(fifty.prefix(5)) == [0, 20, 41, 61, 82])
        #expect(Array(fifty.suffix(2)) == [979, 999])
        #expect(try steps("1000") == Array(0..<1000))
        #expect(try steps("1") == [0])
        // Three sections of 334, 333, 333 steps.
        let three = try steps("10,15,20")
        #expect(three.count == 45)
        #expect(Array(three.prefix(11)) == [0, 37, 74, 111, 148, 185, 222, 259, 296, 333, 334])
        #expect(three.last == 999)
        #expect(three.contains(666) && three.contains(667))
        #expect(throws: SamplingError.self) { try steps("400,400,400") }
    }

    @Test func sectionRoundingIsHalfToEvenOnTheAccumulatedIndex() throws {
        // S = 11, K = 5: stride 2.5, indices 0, 2.5, 5, 7.5, 10 -> 0, 2, 5, 8, 10 (half to even).
        #expect(try steps("5", 11) == [0, 2, 5, 8, 10])
        // T = 4000, K = 3955: the reference's accumulated sum gives 1999 where round(k (S-1)/(K-1)) gives 2000.
        let many = try steps("3955", 4000)
        #expect(many.contains(1999) && !many.contains(2000))
    }

    @Test func diffusersSpacings() throws {
        #expect(try steps("leading10").reversed() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0])
        #expect(try steps("trailing10").reversed() == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99])
        #expect(try steps("linspace10").reversed() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0])
        #expect(try steps("linspace7").reversed() == [999, 832, 666, 500, 333, 166, 0])
        #expect(try steps("trailing7").reversed() == [999, 856, 713, 570, 428, 285, 142])
        // numpy's float arange yields 62 entries here, the last -1; the 61 timesteps before it are kept.
        let t61 = try steps("trailing61")
        #expect(t61.count == 61 && t61.first! >= 0)
        #expect(TimestepRespacing.diffusersTrailing(trainingSteps: 1000, count: 61).count == 62)
        #expect(TimestepRespacing.diffusersTrailing(trainingSteps: 1000, count: 61).last == -1)
        // An exact .5 tie that numpy's arange lands just below: diffusers gives 186, 436, 686, 936.
        let t48 = try steps("trailing48")
        #expect(t48.contains(186) && t48.contains(436) && t48.contains(686) && t48.contains(936))
        #expect(!t48.contains(187) && !t48.contains(937))
        #expect(throws: SamplingError.self) { try steps("leading1001") }
    }

    /// Tests/Fixtures/respacing/diffusers-trailing-T1000.tsv, written with numpy by
    /// training/make_respacing_fixture.py: diffusers' trailing list for every N in 1...1000 and
    /// a hash of the float64 bits of the arange behind it.
    @Test func trailingMatchesNumpyForEveryStepCount() throws {
        let url = FixtureReader.fixtures.appendingPathComponent("respacing/diffusers-trailing-T1000.tsv")
        let lines = try String(contentsOf: url, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        #expect(lines.count == 1000)
        var withExtra = 0, checked = 0
        for line in lines {
            let f = line.split(separator: "\t", omittingEmptySubsequences: false)
            let n = Int(f[0])!, entries = Int(f[1])!
            let reference = f[3].split(separator: ",").map { Int($0)! }
            let arange = TimestepRespacing.numpyArange(from: 1000, to: 0, step: -(1000.0 / Double(n)))
            var hash: UInt64 = 0xCBF2_9CE4_8422_2325
            for v in arange {
                var bits = v.bitPattern.littleEndian
                withUnsafeBytes(of: &bits) { for b in $0 { hash = (hash ^ UInt64(b)) &* 0x100_0000_01B3 } }
            }
            #expect(String(format: "%016lx", hash) == String(f[2]), "arange bits differ at N = \(n)")
            let ours = TimestepRespacing.diffusersTrailing(trainingSteps: 1000, count: n)
            #expect(ours == reference, "N = \(n)")
            #expect(reference.count == entries)
            // What the sampler visits: diffusers' list without its final -1, ascending.
            let kept = try steps("trailing\(n)")
            #expect(kept == reference.filter { $0 >= 0 }.reversed(), "N = \(n)")
            #expect(kept.count == n)
            if entries == n + 1 { withExtra += 1; #expect(reference.last == -1) } else { #expect(entries == n) }
            checked += 1
        }
        #expect(checked == 1000)
        #expect(withExtra == 62)
    }

    @Test func parsingAndCoding() throws {
        #expect(try TimestepRespacing(parsing: "") == .full)
        #expect(try TimestepRespacing(parsing: "ddim50") == .ddim(50))
        #expect(try TimestepRespacing(parsing: "10, 20") == .sections([10, 20]))
        #expect(try TimestepRespacing(parsing: "trailing8") == .trailing(8))
        for bad in ["ddim", "abc", "10,,", "-5", "leadingX"] {
            #expect(throws: SamplingError.self) { try TimestepRespacing(parsing: bad) }
        }
        let data = try JSONEncoder().encode([TimestepRespacing.sections([10, 15])])
        #expect(String(decoding: data, as: UTF8.self) == "[\"10,15\"]")
        #expect(try JSONDecoder().decode([TimestepRespacing].self, from: data) == [.sections([10, 15])])
    }
}
