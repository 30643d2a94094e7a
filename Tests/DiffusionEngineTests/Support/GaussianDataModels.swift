import Foundation
@testable import DiffusionEngine

/// The exact denoiser of data x0 ~ N(mu_c, s^2) per element (mu_c chosen by class), in closed form:
/// eps*(x_t, t) = sqrt(1 - abar)(x_t - sqrt(abar) mu)/(abar s^2 + 1 - abar).
final class GaussianDataPredictor: NoisePredictor {
    let schedule: NoiseSchedule
    let means: [Int: Double]
    let defaultMean: Double
    let standardDeviation: Double
    let prediction: PredictionType
    /// When set, the network also outputs C variance channels holding this value.
    let varianceOutput: Float?
    var calls: [(timesteps: [Int], batch: Int)] = []

    init(schedule: NoiseSchedule, mean: Double, standardDeviation: Double, classMeans: [Int: Double] = [:],
         prediction: PredictionType = .epsilon, varianceOutput: Float? = nil) {
        self.schedule = schedule
        self.defaultMean = mean
        self.means = classMeans
        self.standardDeviation = standardDeviation
        self.prediction = prediction
        self.varianceOutput = varianceOutput
    }

    var outputChannels: Int { varianceOutput == nil ? 1 : 2 }

    func predict(_ x: Tensor, timesteps: [Int], classes: [Int]?) throws -> Tensor {
        calls.append((timesteps, x.shape[0]))
        let n = x.shape[0], c = x.shape[1], plane = x.shape[2] * x.shape[3]
        let out = Tensor(shape: [n, outputChannels * c, x.shape[2], x.shape[3]])
        let s2 = standardDeviation * standardDeviation
        for image in 0..<n {
            let abar = schedule.alphasCumprod[timesteps[image]]
            let mu = classes.flatMap { means[$0[image]] } ?? defaultMean
            let variance = abar * s2 + 1 - abar
            for j in 0..<(c * plane) {
                let xt = Double(x.data[image * c * plane + j])
                let centred = xt - abar.squareRoot() * mu
                let eps = (1 - abar).squareRoot() * centred / variance
                let x0 = mu + abar.squareRoot() * s2 * centred / variance
                let value: Double
                switch prediction {
                case .epsilon: value = eps
                case .sample: value = x0
                case .velocity: value = (abar.squareRoot() * xt - x0) / (1 - abar).squareRoot()
                }
                out.data[image * outputChannels * c * plane + j] = Float(value)
                if let v = varianceOutput { out.data[image * outputChannels * c * plane + c * plane + j] = v }
            }
        }
        return out
    }

    /// Gamma_t = E||eps*||^2 / d = (1 - abar)/(abar s^2 + 1 - abar) for every original t.
    var gammaTable: [Double] {
        schedule.alphasCumprod.map { abar in (1 - abar) / (abar * standardDeviation * standardDeviation + 1 - abar) }
    }
}

/// The exact noisy classifier of a Gaussian likelihood p(y | x0) = N(y; x0, tau^2) per element under the
/// prior N(mu, s^2): p(y | x_t) = N(y; E[x0|x_t], tau^2 + Cov[x0|x_t]), whose x_t-gradient is linear.
struct GaussianLikelihoodClassifier: ClassifierGradient {
    let schedule: NoiseSchedule
    let priorMean: Double
    let priorStandardDeviation: Double
    let observation: Double
    let likelihoodStandardDeviation: Double

    func gradientOfLogProbability(_ x: Tensor, timesteps: [Int], classes: [Int]) throws -> Tensor {
        let g = Tensor(shape: x.shape)
        let perImage = x.count / x.shape[0]
        let s2 = priorStandardDeviation * priorStandardDeviation, tau2 = likelihoodStandardDeviation * likelihoodStandardDeviation
        for image in 0..<x.shape[0] {
            let abar = schedule.alphasCumprod[timesteps[image]]
            let variance = abar * s2 + 1 - abar
            let slope = abar.squareRoot() * s2 / variance
            let covariance = s2 * (1 - abar) / variance
            for j in 0..<perImage {
                let xt = Double(x.data[image * perImage + j])
                let mean = priorMean + slope * (xt - abar.squareRoot() * priorMean)
                g.data[image * perImage + j] = Float((observation - mean) / (tau2 + covariance) * slope)
            }
        }
        return g
    }

    /// The exact posterior N(mean, variance) of x0 given y.
    var posterior: (mean: Double, variance: Double) {
        let s2 = priorStandardDeviation * priorStandardDeviation, tau2 = likelihoodStandardDeviation * likelihoodStandardDeviation
        let variance = 1 / (1 / s2 + 1 / tau2)
        return (variance * (priorMean / s2 + observation / tau2), variance)
    }
}

/// Sample mean and (population) variance of every element.
func moments(_ t: Tensor) -> (mean: Double, variance: Double) {
    let n = Double(t.count)
    let mean = t.buffer.reduce(0.0) { $0 + Double($1) } / n
    let variance = t.buffer.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / n
    return (mean, variance)
}

/// The exact output distribution of a DDPM or DDIM chain driven by the exact denoiser of N(mean, variance) data,
/// computed independently of the samplers: every step is affine in x, x' = A x + B + std z, starting from N(0, 1).
enum LinearGaussianChain {
    enum Kind { case ddpm(VarianceType), ddim(eta: Double) }

    static func output(_ r: RespacedSchedule, _ kind: Kind, dataMean mu: Double, dataVariance s2: Double) -> (mean: Double, variance: Double) {
        var m = 0.0, v = 1.0
        let abarAll = r.schedule.alphasCumprod
        for i in (0..<r.count).reversed() {
            let a = abarAll[i], prev = i == 0 ? 1.0 : abarAll[i - 1]
            let slope = a.squareRoot() * s2 / (a * s2 + 1 - a)
            let q = slope, p = mu * (1 - slope * a.squareRoot())
            let (scale, shift, noiseVariance): (Double, Double, Double)
            switch kind {
            case .ddpm(let type):
                let beta = 1 - a / prev
                let c1 = prev.squareRoot() * beta / (1 - a), c2 = (1 - beta).squareRoot() * (1 - prev) / (1 - a)
                let small = beta * (1 - prev) / (1 - a)
                let large = i == 0 ? 0 : beta
                (scale, shift, noiseVariance) = (c1 * q + c2, c1 * p, i == 0 ? 0 : (type == .fixedLarge ? large : small))
            case .ddim(let eta):
                let sigma = eta * ((1 - prev) / (1 - a)).squareRoot() * (1 - a / prev).squareRoot()
                let d = (1 - prev - sigma * sigma).squareRoot(), rr = (1 / a - 1).squareRoot()
                let onX0 = prev.squareRoot() - d / rr
                (scale, shift, noiseVariance) = (onX0 * q + d / (rr * a.squareRoot()), onX0 * p, i == 0 ? 0 : sigma * sigma)
            }
            m = scale * m + shift
            v = scale * scale * v + noiseVariance
        }
        return (m, v)
    }
}
