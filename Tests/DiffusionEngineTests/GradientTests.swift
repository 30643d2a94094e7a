@testable import DiffusionEngine
import Foundation
import Testing

@Suite struct GradientTests {
    /// The hand-written input gradient agrees with central finite differences of the float32 forward pass.
    @Test(arguments: ["attention", "adaptive"])
    func classifierGradientMatchesFiniteDifferences(_ pool: String) throws {
        let arch = ADMArchitecture(type: "adm-encoder", imageSize: 8, inChannels: 2, outChannels: 4, modelChannels: 32,
                                   numResBlocks: 1, attentionResolutions: [2], channelMult: [1, 2], numHeads: 2,
                                   numHeadChannels: pool == "attention" ? 32 : -1, useScaleShiftNorm: pool == "attention",
                                   resblockUpdown: pool == "attention", useNewAttentionOrder: pool == "adaptive", pool: pool)
        let net = try NoisyClassifier(architecture: arch, weights: try RandomWeights.adm(arch, seed: 3))
        let x = Tensor(shape: [2, 2, 8, 8], values: randomValues(256, seed: 11))
        let t = [17, 640], y = [1, 3]
        let (_, grad) = try net.logProbabilityGradient(x, timesteps: t, classes: y)
        func objective(_ x: Tensor) throws -> Double {
            let l = try net.logits(x, timesteps: t)
            var total = 0.0
            for b in 0..<2 {
                let row = (0..<4).map { Double(l.data[b * 4 + $0]) }
                let m = row.max()!
                total += row[y[b]] - m - Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
            }
            return total
        }
        var worst = 0.0, largest = 0.0
        for i in stride(from: 0, to: x.count, by: 7) {
            let h: Float = 1e-2
            let saved = x.data[i]
            x.data[i] = saved + h; let up = try objective(x)
            x.data[i] = saved - h; let down = try objective(x)
            x.data[i] = saved
            let fd = (up - down) / Double(2 * h)
            worst = max(worst, abs(fd - Double(grad.data[i])))
            largest = max(largest, abs(Double(grad.data[i])))
        }
        #expect(largest > 0)
        #expect(worst < 2e-3 * max(largest, 1e-3), "max deviation \(worst), largest gradient \(largest)")
    }
}
