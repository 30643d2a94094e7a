// The sampling stage's cost model: the engine's speed on the sweep's work.
import DiffusionDaemon
import DiffusionEngine
import Foundation
import ModelBundles

/// The engine's speed on the sweep's work, measured at the start of the stage (or assumed).
struct SamplingCalibration: Codable {
    /// UNet rows per second inside a sampling chain (sampler step and noise included), batch 64.
    var unetRowsPerSecond: Double
    /// Noisy-classifier forward + input-gradient rows per second, batch 64.
    var classifierRowsPerSecond: Double
    /// "measured" or "assumed".
    var source: String

    static let assumed = SamplingCalibration(unetRowsPerSecond: 363, classifierRowsPerSecond: 945, source: "assumed")

    /// Times a 4-step chain on 64 images and the classifier gradient on 64 rows.
    static func measure(options: Options) throws -> SamplingCalibration {
        let models = URL(fileURLWithPath: options.models)
        let bundle = try ModelBundle(directory: models.appendingPathComponent(options.model))
        let predictor = UNetNoisePredictor(try bundle.makeUNet())
        var c = SamplingConfiguration()
        if let d = bundle.manifest.diffusion { c.diffusion = d }
        c.respacing = try TimestepRespacing(parsing: "4")
        let a = predictor.network.architecture
        let shape = ImageShape(channels: a.inChannels, height: a.imageSize, width: a.imageSize)
        let pipeline = try SamplingPipeline(configuration: c, predictor: predictor, imageShape: shape)
        let indices = Array(0..<64), classes = indices.map { $0 % 10 }
        let chain = try timed(minSeconds: 0.5, minReps: 2) { _ = try pipeline.generate(imageIndices: indices, classes: classes) }
        var classifierRate = assumed.classifierRowsPerSecond
        let classifierDirectory = models.appendingPathComponent("\(options.model)-classifier")
        if FileManager.default.fileExists(atPath: classifierDirectory.path + "/model.json") {
            let gradient = ClassifierGuidanceGradient(try ModelBundle(directory: classifierDirectory).makeClassifier())
            let x = Tensor(shape: shape.batch(64))
            for i in 0..<x.count { x.data[i] = Float(sin(Double(i) * 0.21)) }
            let t = indices.map { ($0 * 13) % 1000 }
            let g = try timed(minSeconds: 0.3, minReps: 2) { _ = try gradient.gradientOfLogProbability(x, timesteps: t, classes: classes) }
            classifierRate = 64 / g.median
        }
        return SamplingCalibration(unetRowsPerSecond: 64 * 4 / chain.median, classifierRowsPerSecond: classifierRate, source: "measured")
    }

    /// Predicted seconds of one row: networks run on chunks of exactly 64 rows.
    func seconds(_ row: SweepRow, n: Int) -> Double {
        func padded(_ rows: Int) -> Double { Double((rows + 63) / 64 * 64) }
        let unet = padded(row.networkEvaluationsPerImage / row.chainSteps * n) * Double(row.chainSteps) / unetRowsPerSecond
        let classifier = row.classifierEvaluationsPerImage > 0 ? padded(n) * Double(row.chainSteps) / classifierRowsPerSecond : 0
        return unet + classifier + 0.2
    }
}
