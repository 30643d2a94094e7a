@testable import DiffusionEngine
import Digests
import Foundation
import ModelBundles
import Testing

/// Builds safetensors bytes from (name, dtype, shape, raw bytes).
func safetensorsBytes(_ entries: [(String, String, [Int], [UInt8])]) -> Data {
    var header = "{"
    var offset = 0
    var payload: [UInt8] = []
    for (i, e) in entries.enumerated() {
        header += "\(i == 0 ? "" : ",")\"\(e.0)\":{\"dtype\":\"\(e.1)\",\"shape\":\(e.2),\"data_offsets\":[\(offset),\(offset + e.3.count)]}"
        offset += e.3.count
        payload += e.3
    }
    header += "}"
    var out = Data()
    var n = UInt64(header.utf8.count).littleEndian
    withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
    out.append(contentsOf: Array(header.utf8))
    out.append(contentsOf: payload)
    return out
}

func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}

let tinyUNet = ADMArchitecture(type: "adm-unet", imageSize: 8, inChannels: 1, outChannels: 1, modelChannels: 32,
                               numResBlocks: 1, attentionResolutions: [], channelMult: [1, 1])

@Suite struct WeightTests {
    @Test func parsesEveryDType() throws {
        let data = safetensorsBytes([
            ("f32", "F32", [2], littleEndianBytes([Float(1.5).bitPattern, Float(-2).bitPattern])),
            ("f64", "F64", [1], littleEndianBytes([Double(0.25).bitPattern])),
            ("f16", "F16", [2], littleEndianBytes([Float16(3.5).bitPattern, Float16(-0.125).bitPattern])),
            ("bf16", "BF16", [1], littleEndianBytes([UInt16(Float(-6).bitPattern >> 16)])),
            ("i64", "I64", [2, 1], littleEndianBytes([Int64(-7), Int64(1 << 40)])),
        ])
        let s = try SafeTensors(bytes: data)
        #expect(try s.floats("f32") == [1.5, -2])
        #expect(try s.doubles("f64") == [0.25])
        #expect(try s.floats("f16") == [3.5, -0.125])
        #expect(try s.floats("bf16") == [-6])
        #expect(try s.integers("i64") == [-7, 1 << 40])
        #expect(s.entries["i64"]?.shape == [2, 1])
        #expect(try s.tensor("f32").shape == [2])
    }

    @Test func rejectsMalformedFiles() {
        #expect(throws: EngineError.self) { try SafeTensors(bytes: Data([1, 2, 3])) }
        var bad = safetensorsBytes([("a", "F32", [3], littleEndianBytes([UInt32(0), 0]))])
        #expect(throws: EngineError.self) { try SafeTensors(bytes: bad) }
        bad = safetensorsBytes([("a", "U8", [1], [0])])
        #expect(throws: EngineError.unsupportedDType(name: "a", dtype: "U8")) { try SafeTensors(bytes: bad) }
    }

    @Test func serializationRoundTrips() throws {
        let t = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let s = try SafeTensors(bytes: SafeTensors.serialize(["w": t]))
        #expect(try s.tensor("w").array == t.array)
    }

    @Test func reportsMissingExtraAndMisshapenWeights() throws {
        var w = try RandomWeights.adm(tinyUNet)
        _ = try ADMUNet(architecture: tinyUNet, weights: w)
        let conv = w.removeValue(forKey: "out.2.weight")!
        #expect(throws: EngineError.missingWeight(key: "out.2.weight", expectedShape: [1, 32, 3, 3])) {
            try ADMUNet(architecture: tinyUNet, weights: w)
        }
        w["out.2.weight"] = Tensor(shape: [2, 32, 3, 3])
        #expect(throws: EngineError.shapeMismatch(key: "out.2.weight", expected: [1, 32, 3, 3], actual: [2, 32, 3, 3])) {
            try ADMUNet(architecture: tinyUNet, weights: w)
        }
        w["out.2.weight"] = conv
        w["label_emb.weight"] = Tensor(shape: [3, 128])
        #expect(throws: EngineError.unexpectedWeights(["label_emb.weight"])) { try ADMUNet(architecture: tinyUNet, weights: w) }
    }

    @Test func decodesArchitectureJSON() throws {
        let json = """
        {"type": "adm-unet", "image_size": 28, "in_channels": 1, "out_channels": 2, "model_channels": 32,
         "num_res_blocks": 2, "attention_resolutions": [4], "channel_mult": [1, 2, 2], "num_classes": 11,
         "num_heads": 1, "num_head_channels": 32, "num_heads_upsample": -1, "use_scale_shift_norm": true,
         "resblock_updown": true, "use_new_attention_order": false}
        """
        let arch = try JSONDecoder().decode(NetworkArchitecture.self, from: Data(json.utf8))
        guard case .adm(let a) = arch else { Issue.record("not adm"); return }
        #expect(a.numClasses == 11 && a.channelMult == [1, 2, 2] && a.useScaleShiftNorm && a.pool == nil)
    }

    @Test func bundleChecksumMismatchNamesFileAndHashes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bundle-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let weights = SafeTensors.serialize(try RandomWeights.adm(tinyUNet))
        try weights.write(to: dir.appendingPathComponent("model.safetensors"))
        let archJSON = String(decoding: try JSONEncoder().encode(tinyUNet), as: UTF8.self)
        func manifest(_ hash: String) -> String {
            """
            {"format": "diffusiond-bundle/1", "name": "t", "kind": "unet", "architecture": \(archJSON),
             "files": {"model.safetensors": "\(hash)"}}
            """
        }
        let good = SHA256Hex.of(weights)
        try manifest(good).write(to: dir.appendingPathComponent("model.json"), atomically: true, encoding: .utf8)
        let net = try ModelBundle(directory: dir).makeUNet()
        #expect(net.architecture == tinyUNet)
        let wrong = String(repeating: "0", count: 64)
        try manifest(wrong).write(to: dir.appendingPathComponent("model.json"), atomically: true, encoding: .utf8)
        #expect(throws: BundleError.checksumMismatch(file: "model.safetensors", expected: wrong, actual: good)) {
            try ModelBundle(directory: dir)
        }
        #expect(throws: BundleError.wrongKind(expected: "classifier", actual: "unet")) {
            try ModelBundle(directory: dir, verifyChecksums: false).makeClassifier()
        }
    }

    @Test func sha256MatchesKnownDigest() {
        #expect(SHA256Hex.of(Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }
}
