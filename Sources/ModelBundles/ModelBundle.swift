import DiffusionEngine
import Digests
import Foundation

/// Errors raised while reading a bundle folder.
public enum BundleError: Error, CustomStringConvertible, Equatable {
    /// A file model.json needs (or model.json itself) is absent or unreadable.
    case missingFile(String)
    /// A file's SHA-256 differs from the one recorded in model.json.
    case checksumMismatch(file: String, expected: String, actual: String)
    /// model.json does not decode or is inconsistent.
    case invalidManifest(String)
    /// The bundle is of another kind than the network asked for.
    case wrongKind(expected: String, actual: String)

    /// A human-readable explanation naming the file involved.
    public var description: String {
        switch self {
        case .missingFile(let f): "bundle file '\(f)' is missing or unreadable"
        case .checksumMismatch(let f, let e, let a): "bundle file '\(f)' has SHA-256 \(a), model.json records \(e)"
        case .invalidManifest(let m): "invalid model.json: \(m)"
        case .wrongKind(let e, let a): "bundle is of kind '\(a)', expected '\(e)'"
        }
    }
}

/// The "data" object of model.json.
public struct DataSettings: Codable, Sendable, Equatable {
    /// Image height in pixels.
    public var height: Int
    /// Image width in pixels.
    public var width: Int
    /// Image channels.
    public var channels: Int
    /// How pixels map to network inputs.
    public var normalisation: String?
}

/// A bundle's model.json (fields the engine and daemon use; others are ignored).
public struct BundleManifest: Codable, Sendable, Equatable {
    /// "diffusiond-bundle/1".
    public var format: String
    /// Bundle name.
    public var name: String
    /// "unet", "classifier" or "features".
    public var kind: String
    /// The network's hyperparameters (required to build a network; the daemon's catalog reads
    /// model.json stubs without one).
    public var architecture: NetworkArchitecture?
    /// Diffusion process settings (UNet bundles).
    public var diffusion: DiffusionSettings?
    /// Class names.
    public var classes: [String]?
    /// The label meaning "no class" (UNet bundles).
    public var nullClass: Int?
    /// Image geometry.
    public var data: DataSettings?
    /// SHA-256 (hex) of each file of the bundle, by file name (empty in stubs).
    public var files: [String: String]

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decode(String.self, forKey: .format)
        name = try c.decode(String.self, forKey: .name)
        kind = try c.decode(String.self, forKey: .kind)
        architecture = try c.decodeIfPresent(NetworkArchitecture.self, forKey: .architecture)
        diffusion = try c.decodeIfPresent(DiffusionSettings.self, forKey: .diffusion)
        classes = try c.decodeIfPresent([String].self, forKey: .classes)
        nullClass = try c.decodeIfPresent(Int.self, forKey: .nullClass)
        data = try c.decodeIfPresent(DataSettings.self, forKey: .data)
        files = try c.decodeIfPresent([String: String].self, forKey: .files) ?? [:]
    }

    enum CodingKeys: String, CodingKey {
        case format, name, kind, architecture, diffusion, classes, data, files
        case nullClass = "null_class"
    }
}

/// A model bundle folder: model.json plus the safetensors files it lists, checksums verified.
public struct ModelBundle: Sendable {
    /// The folder.
    public let directory: URL
    /// The decoded model.json.
    public let manifest: BundleManifest

    /// Reads model.json and (by default) checks the SHA-256 of every file it lists.
    public init(directory: URL, verifyChecksums: Bool = true) throws {
        self.directory = directory
        let manifestURL = directory.appendingPathComponent("model.json")
        guard let json = try? Data(contentsOf: manifestURL) else { throw BundleError.missingFile(manifestURL.path) }
        do { manifest = try JSONDecoder().decode(BundleManifest.self, from: json) } catch {
            throw BundleError.invalidManifest("\(error)")
        }
        if verifyChecksums {
            for (file, expected) in manifest.files.sorted(by: { $0.key < $1.key }) {
                let actual = SHA256Hex.of(try read(file))
                guard actual == expected.lowercased() else { throw BundleError.checksumMismatch(file: file, expected: expected, actual: actual) }
            }
        }
    }

    /// The bytes of a file inside the bundle.
    public func read(_ file: String) throws -> Data {
        let url = directory.appendingPathComponent(file)
        guard let d = try? Data(contentsOf: url) else { throw BundleError.missingFile(file) }
        return d
    }

    /// A safetensors file inside the bundle, parsed.
    public func safeTensors(_ file: String) throws -> SafeTensors {
        try SafeTensors(bytes: try read(file))
    }

    /// The network weights (model.safetensors) as float32 tensors by state-dict key.
    public func weights() throws -> [String: Tensor] {
        try safeTensors("model.safetensors").tensors()
    }

    private func admArchitecture(kind: String) throws -> ADMArchitecture {
        guard manifest.kind == kind else { throw BundleError.wrongKind(expected: kind, actual: manifest.kind) }
        guard case .adm(let a)? = manifest.architecture else { throw BundleError.invalidManifest("kind \(kind) needs an adm architecture") }
        return a
    }

    /// Builds the ADM UNet of a "unet" bundle.
    public func makeUNet() throws -> ADMUNet {
        try ADMUNet(architecture: try admArchitecture(kind: "unet"), weights: try weights())
    }

    /// The Extended-Analytic-DPM heads the bundle ships (`sn-head.safetensors`, `npr-head.safetensors`,
    /// each listed with its SHA-256 in model.json like every bundle file).
    public var covarianceHeads: [CovarianceHeadKind] {
        CovarianceHeadKind.allCases.filter { manifest.files[$0.fileName] != nil }
    }

    /// Builds the UNet with an SN-DPM or NPR-DPM head (see `ADMUNet.init(_:covarianceHead:weights:)`);
    /// its keys and shapes are checked against the architecture. Throws when the bundle lacks the head,
    /// or when the head records (metadata `unet_sha256`) that it was trained on other UNet weights.
    public func makeUNet(covarianceHead kind: CovarianceHeadKind) throws -> ADMUNet {
        guard manifest.files[kind.fileName] != nil else {
            throw BundleError.invalidManifest("bundle \(manifest.name) has no \(kind.rawValue) head (\(kind.fileName) is not listed in model.json)")
        }
        let head = try safeTensors(kind.fileName)
        if let trainedOn = head.metadata["unet_sha256"], let weights = manifest.files["model.safetensors"], trainedOn != weights {
            throw BundleError.invalidManifest("\(kind.fileName) of bundle \(manifest.name) was trained on other UNet weights (sha256 \(trainedOn.prefix(12)), the bundle's are \(weights.prefix(12))); train it again: training/train_heads.py --kind \(kind.rawValue) --export")
        }
        return try ADMUNet(try makeUNet(), covarianceHead: kind, weights: head.tensors())
    }

    /// Analytic-DPM's Gamma tables (gamma.safetensors), indexed by original timestep: "gamma" for the
    /// null class (unconditional), "gamma_conditional" for the true class; nil when the bundle has none.
    public func gammaTables() throws -> (unconditional: [Double], conditional: [Double]?)? {
        guard manifest.files["gamma.safetensors"] != nil else { return nil }
        let st = try safeTensors("gamma.safetensors")
        return (try st.doubles("gamma"), st.names.contains("gamma_conditional") ? try st.doubles("gamma_conditional") : nil)
    }

    /// The SHA-256 of the bundle's content: of its model.json, which records the SHA-256 of every file.
    public var contentHash: String {
        (try? read("model.json")).map { SHA256Hex.of($0) } ?? ""
    }

    /// Builds the noisy classifier of a "classifier" bundle.
    public func makeClassifier() throws -> NoisyClassifier {
        try NoisyClassifier(architecture: try admArchitecture(kind: "classifier"), weights: try weights())
    }

    /// Builds the feature CNN of a "features" bundle.
    public func makeFeatureNetwork() throws -> FeatureCNN {
        guard manifest.kind == "features" else { throw BundleError.wrongKind(expected: "features", actual: manifest.kind) }
        guard case .featureCNN(let a)? = manifest.architecture else { throw BundleError.invalidManifest("kind features needs a feature-cnn architecture") }
        return try FeatureCNN(architecture: a, weights: try weights())
    }
}
