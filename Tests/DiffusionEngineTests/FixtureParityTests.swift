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

/// Parity of the shipped bundles in models/ with their reference outputs, when both exist.
@Suite struct ShippedBundleParityTests {
    static let repository = fixturesDirectory.deletingLastPathComponent().deletingLastPathComponent()

    static func available(_ name: String) -> (ModelBundle, SafeTensors)? {
        let io = fixturesDirectory.appendingPathComponent("shipped/\(name)-io.safetensors")
        let dir = repository.appendingPathComponent("models/\(name)")
        guard FileManager.default.fileExists(atPath: io.path),
              FileManager.default.fileExists(atPath: dir.appendingPathComponent("model.json").path),
              let bundle = try? ModelBundle(directory: dir), let data = try? Data(contentsOf: io),
              let tensors = try? SafeTensors(bytes: data) else { return nil }
        return (bundle, tensors)
    }

    @Test(arguments: ["fashion-mnist", "fashion-mnist-classifier", "fashion-mnist-features"])
    func shippedBundleMatchesReference(_ name: String) throws {
        guard let (bundle, io) = Self.available(name) else { return }
        let x = try io.tensor("x")
        switch bundle.manifest.kind {
        case "unet":
            let y = io.entries["y"] == nil ? nil : try io.integers("y")
            let out = try bundle.makeUNet().forward(x, timesteps: try io.integers("t"), classes: y)
            let err = relativeError(out, try io.tensor("out"))
            print("parity \(name): out \(err)")
            #expect(err < 1e-4)
        case "classifier":
            let (logits, grad) = try bundle.makeClassifier().logProbabilityGradient(x, timesteps: try io.integers("t"), classes: try io.integers("y"))
            let le = relativeError(logits, try io.tensor("logits")), ge = relativeError(grad, try io.tensor("grad"))
            print("parity \(name): logits \(le), gradient \(ge)")
            #expect(le < 1e-4 && ge < 1e-4)
        default:
            let (features, logits) = try bundle.makeFeatureNetwork().forward(x)
            let fe = relativeError(features, try io.tensor("features")), le = relativeError(logits, try io.tensor("logits"))
            print("parity \(name): features \(fe), logits \(le)")
            #expect(fe < 1e-4 && le < 1e-4)
        }
    }
}
