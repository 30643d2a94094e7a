import Foundation

/// Monte Carlo estimate of Analytic-DPM's Gamma table: for each ORIGINAL timestep t,
/// Gamma_t = E_{x0, eps} ||eps_theta(x_t, t)||^2 / d with x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
///
/// Every (image, timestep) pair gets its own noise draw from `PhiloxNormalSource(seed)` (image =
/// the data set index, draw = t), so a table computed in pieces, in another order or resumed
/// after an interruption sums exactly the same terms. Sums are float64. The network sees each
/// image twice per timestep when `nullClass` is given: with the null class (the unconditional
/// table, the one the paper uses) and with the image's own label (the class-conditional table).
public struct GammaEstimator {
    /// Partial sums of ||eps_theta||^2 / d per timestep, and the images counted in each.
    public struct Sums: Sendable, Equatable {
        /// Sum over the images counted so far, null class (or an unconditional network).
        public var unconditional: [Double]
        /// Sum with each image's own class; nil for an unconditional network.
        public var conditional: [Double]?
        /// Images counted at each timestep (a prefix of the data set).
        public var counts: [Int]

        /// Empty sums for `timesteps` timesteps.
        public init(timesteps: Int, conditional: Bool) {
            unconditional = Array(repeating: 0, count: timesteps)
            self.conditional = conditional ? Array(repeating: 0, count: timesteps) : nil
            counts = Array(repeating: 0, count: timesteps)
        }

        /// The tables: sums divided by counts (timesteps not yet counted are NaN).
        public var tables: (unconditional: [Double], conditional: [Double]?) {
            func mean(_ s: [Double]) -> [Double] { zip(s, counts).map { $1 > 0 ? $0 / Double($1) : .nan } }
            return (mean(unconditional), conditional.map(mean))
        }
    }

    /// The network.
    public let network: any NoisePredictor
    /// The model's diffusion settings (schedule, prediction type).
    public let settings: DiffusionSettings
    /// Training images in the model's range, [M, C, H, W].
    public let images: Tensor
    /// The class of each image (for the conditional table).
    public let labels: [Int]
    /// The network's null class; nil for an unconditional network.
    public let nullClass: Int?
    /// Seed of the noise draws.
    public let seed: UInt64
    private let schedule: NoiseSchedule

    /// Creates the estimator; `labels` has one class per image.
    public init(network: any NoisePredictor, settings: DiffusionSettings, images: Tensor, labels: [Int],
                nullClass: Int?, seed: UInt64 = 2024) throws {
        guard images.shape.count == 4, images.shape[0] == labels.count, !labels.isEmpty else {
            throw EngineError.invalidInput("Gamma estimation needs [M, C, H, W] images and one label each, got \(images.shape) and \(labels.count) labels")
        }
        self.network = network
        self.settings = settings
        self.images = images
        self.labels = labels
        self.nullClass = nullClass
        self.seed = seed
        schedule = NoiseSchedule(settings.schedule, steps: settings.steps)
    }

    /// Adds images `range` at timestep `t` to `sums` (the range must start at `sums.counts[t]`).
    public func accumulate(timestep t: Int, images range: Range<Int>, into sums: inout Sums) throws {
        guard t >= 0, t < schedule.count, range.lowerBound == sums.counts[t], range.upperBound <= labels.count else {
            throw EngineError.invalidInput("Gamma: images \(range) at timestep \(t) do not continue the \(sums.counts[t]) counted")
        }
        let n = range.count
        guard n > 0 else { return }
        let perImage = images.count / images.shape[0]
        let d = Double(perImage)
        let abar = schedule.alphasCumprod[t]
        let a = Float(abar.squareRoot()), b = Float((1 - abar).squareRoot())
        let xt = Tensor(shape: [n] + images.shape.dropFirst())
        let source = PhiloxNormalSource(seed: seed)
        for (row, index) in range.enumerated() {
            let out = UnsafeMutableBufferPointer(start: xt.data + row * perImage, count: perImage)
            source.fillStandardNormal(out, image: index, draw: t)
            let x0 = images.data + index * perImage
            for j in 0..<perImage { out[j] = a * x0[j] + b * out[j] }
        }
        let timesteps = Array(repeating: t, count: n)
        let transform = PredictionTransform(prediction: settings.prediction, alphaBar: abar)
        func sumOfSquares(classes: [Int]?) throws -> Double {
            let output = try network.predict(xt, timesteps: timesteps, classes: classes)
            let outPerImage = output.count / n
            var total = 0.0
            for row in 0..<n {
                // eps from the first C output channels (the rest is the learned variance): in NCHW they
                // are the first perImage values of the row, aligned element for element with x_t.
                let o = UnsafePointer(output.data + row * outPerImage), x = UnsafePointer(xt.data + row * perImage)
                var s = 0.0
                var j = 0
                while j < perImage {
                    let lanes = min(16, perImage - j)
                    let e = transform.epsilon(x: VectorLanes.load(x + j, lanes), output: VectorLanes.load(o + j, lanes))
                    for l in 0..<lanes { s += Double(e[l]) * Double(e[l]) }
                    j += 16
                }
                total += s / d
            }
            return total
        }
        if let null = nullClass {
            sums.unconditional[t] += try sumOfSquares(classes: Array(repeating: null, count: n))
            sums.conditional?[t] += try sumOfSquares(classes: Array(labels[range]))
        } else {
            sums.unconditional[t] += try sumOfSquares(classes: nil)
        }
        sums.counts[t] = range.upperBound
    }
}
