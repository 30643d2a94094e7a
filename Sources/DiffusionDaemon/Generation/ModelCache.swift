import DiffusionEngine
import Foundation
import ModelBundles

/// A network loaded from its bundle, ready to sample with.
final class LoadedNetwork: @unchecked Sendable {
    /// The bundle (manifest, folder).
    let bundle: ModelBundle
    /// The UNet, for "unet" bundles.
    let predictor: UNetNoisePredictor?
    /// The noisy classifier, for "classifier" bundles.
    let classifier: ClassifierGuidanceGradient?
    /// The feature network behind FID, for "features" bundles (cached for metrics; it samples nothing).
    let features: FeatureCNN?
    /// Analytic-DPM's Gamma tables, when the bundle has them.
    let gamma: (unconditional: [Double], conditional: [Double]?)?
    /// Bytes of weights held (the estimate the cache budget counts).
    let bytes: Int
    /// Seconds the load took (read, SHA-256 check, network construction).
    let loadSeconds: Double

    init(bundle: ModelBundle, predictor: UNetNoisePredictor?, classifier: ClassifierGuidanceGradient?, features: FeatureCNN? = nil,
         gamma: (unconditional: [Double], conditional: [Double]?)?, bytes: Int, loadSeconds: Double) {
        self.bundle = bundle
        self.predictor = predictor
        self.classifier = classifier
        self.features = features
        self.gamma = gamma
        self.bytes = bytes
        self.loadSeconds = loadSeconds
    }

    /// Loads and verifies the bundle folder `directory` and builds its network (a UNet with the
    /// covariance head `head` when asked for one, its convolutions in `precision`).
    static func load(directory: URL, head: CovarianceHeadKind? = nil, precision: ComputePrecision = .fp32) throws -> LoadedNetwork {
        let started = DispatchTime.now()
        let bundle = try ModelBundle(directory: directory)
        var predictor: UNetNoisePredictor?
        var classifier: ClassifierGuidanceGradient?
        var features: FeatureCNN?
        var gamma: (unconditional: [Double], conditional: [Double]?)?
        switch bundle.manifest.kind {
        case "unet":
            let unet = try head.map { try bundle.makeUNet(covarianceHead: $0) } ?? bundle.makeUNet()
            predictor = UNetNoisePredictor(precision == .fp32 ? unet : try ADMUNet(unet, precision: precision))
            gamma = try bundle.gammaTables()
        case "classifier":
            classifier = ClassifierGuidanceGradient(try bundle.makeClassifier())
        case "features":
            features = try bundle.makeFeatureNetwork()
        default:
            throw GenerationError.unusableModel(bundle.manifest.name, "a '\(bundle.manifest.kind)' bundle cannot be loaded")
        }
        let weightBytes = bundle.manifest.files.keys.reduce(0) { sum, file in
            sum + ((try? FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent(file).path)[.size] as? Int) ?? 0)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        // The evaluation plans (activations, reordered weights) roughly double what the weights take.
        return LoadedNetwork(bundle: bundle, predictor: predictor, classifier: classifier, features: features, gamma: gamma,
                             bytes: 2 * weightBytes, loadSeconds: seconds)
    }
}

/// Loaded networks by name, least recently used evicted first when the memory budget is exceeded.
/// Only touched from the compute thread.
final class ModelCache: @unchecked Sendable {
    private let root: URL
    private let budgetBytes: Int
    private var entries: [String: LoadedNetwork] = [:]
    private var order: [String] = []
    private let lock = NSLock()

    init(root: URL, budgetBytes: Int) {
        self.root = root
        self.budgetBytes = budgetBytes
    }

    /// The cached network `name` (with the covariance head `head`: cached apart, as "name+sn"; in a
    /// precision other than fp32: cached apart, as "name@bf16"), and whether this call loaded it.
    func network(_ name: String, head: CovarianceHeadKind? = nil, precision: ComputePrecision = .fp32) throws -> (LoadedNetwork, loadedNow: Bool) {
        let key = (head.map { "\(name)+\($0.rawValue)" } ?? name) + (precision == .fp32 ? "" : "@\(precision.rawValue)")
        lock.lock()
        if let hit = entries[key] {
            order.removeAll { $0 == key }
            order.append(key)
            lock.unlock()
            return (hit, false)
        }
        lock.unlock()
        guard !name.isEmpty, !name.contains("/"), !name.hasPrefix(".") else {
            throw GenerationError.unusableModel(name, "not a bundle name")
        }
        let loaded = try LoadedNetwork.load(directory: root.appendingPathComponent(name, isDirectory: true), head: head, precision: precision)
        lock.lock(); defer { lock.unlock() }
        entries[key] = loaded
        order.append(key)
        var total = entries.values.reduce(0) { $0 + $1.bytes }
        while total > budgetBytes, let oldest = order.first, oldest != key {
            order.removeFirst()
            if let gone = entries.removeValue(forKey: oldest) { total -= gone.bytes }
        }
        return (loaded, true)
    }

    /// Names of the cached networks, most recently used last.
    var names: [String] {
        lock.lock(); defer { lock.unlock() }
        return order
    }
}
