import DiffusionEngine
import Foundation
import ModelBundles
import Testing

/// Folder of the parity fixtures written by training/make_fixtures.py.
let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

/// max |a - b| / max |b|: the error relative to the reference's largest magnitude.
func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.count == b.count, "\(a.shape) vs \(b.shape)")
    var diff: Float = 0, scale: Float = 0
    for i in 0..<a.count {
        diff = max(diff, abs(a.data[i] - b.data[i]))
        scale = max(scale, abs(b.data[i]))
    }
    return diff / max(scale, .leastNormalMagnitude)
}

struct FixtureCase {
    let bundle: ModelBundle
    let io: SafeTensors

    init(_ name: String) throws {
        let dir = fixturesDirectory.appendingPathComponent("bundles").appendingPathComponent(name)
        bundle = try ModelBundle(directory: dir)
        io = try SafeTensors(bytes: try Data(contentsOf: dir.appendingPathComponent("io.safetensors")))
    }
}

@Suite struct FixtureParityTests {
    @Test(arguments: ["tiny-unet-cond", "tiny-unet-uncond"])
    func unetMatchesReference(_ name: String) throws {
        let f = try FixtureCase(name)
        let net = try f.bundle.makeUNet()
        let x = try f.io.tensor("x")
        let t = try f.io.integers("t")
        let y = f.io.entries["y"] == nil ? nil : try f.io.integers("y")
        let ref = try f.io.tensor("out")
        let out = try net.forward(x, timesteps: t, classes: y)
        #expect(out.shape == ref.shape)
        let err = relativeError(out, ref)
        print("parity \(name): out relative error \(err)")
        #expect(err < 1e-4, "\(name): relative error \(err)")
        // A second call reuses the plan and must give identical results.
        let again = try net.forward(x, timesteps: t, classes: y)
        #expect(again.array == out.array)
        // Batch 1 (another plan) matches the first row.
        let x1 = Tensor(shape: [1] + Array(x.shape.dropFirst()), values: Array(x.array.prefix(x.count / x.shape[0])))
        let out1 = try net.forward(x1, timesteps: [t[0]], classes: y.map { [$0[0]] })
        let ref1 = Tensor(shape: out1.shape, values: Array(ref.array.prefix(out1.count)))
        #expect(relativeError(out1, ref1) < 1e-4)
    }

    @Test(arguments: ["tiny-classifier-attention", "tiny-classifier-adaptive"])
    func classifierMatchesReference(_ name: String) throws {
        let f = try FixtureCase(name)
        let net = try f.bundle.makeClassifier()
        let x = try f.io.tensor("x")
        let t = try f.io.integers("t")
        let y = try f.io.integers("y")
        let logits = try net.logits(x, timesteps: t)
        let refLogits = try f.io.tensor("logits")
        let err = relativeError(logits, refLogits)
        #expect(err < 1e-4, "\(name): logits relative error \(err)")
        let (l2, grad) = try net.logProbabilityGradient(x, timesteps: t, classes: y)
        #expect(relativeError(l2, refLogits) < 1e-4)
        let gerr = relativeError(grad, try f.io.tensor("grad"))
        print("parity \(name): logits \(err), gradient \(gerr)")
        #expect(gerr < 1e-4, "\(name): gradient relative error \(gerr)")
    }

    @Test func featureNetworkMatchesReference() throws {
        let f = try FixtureCase("tiny-features")
        let net = try f.bundle.makeFeatureNetwork()
        let (features, logits) = try net.forward(try f.io.tensor("x"))
        let fe = relativeError(features, try f.io.tensor("features"))
        let le = relativeError(logits, try f.io.tensor("logits"))
        print("parity tiny-features: features \(fe), logits \(le)")
        #expect(fe < 1e-4, "features relative error \(fe)")
        #expect(le < 1e-4, "logits relative error \(le)")
    }
}
