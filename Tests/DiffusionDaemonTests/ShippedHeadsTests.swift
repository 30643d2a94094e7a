import DiffusionEngine
import Foundation
import Metrics
import ModelBundles
import Testing

/// The SN and NPR heads shipped in models/fashion-mnist, computed by the engine in the UNet's own
/// forward pass, against what they estimate: over real test images noised at t, the mean of SN's
/// h(x_t) is E[eps^2] = 1, and the mean of NPR's g(x_t) is the UNet's own error E[(eps - eps_theta)^2].
@Suite struct ShippedHeadsTests {
    static let bundleDirectory = URL(fileURLWithPath: packageRoot + "/models/fashion-mnist", isDirectory: true)

    /// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for 64 test images and Box-Muller noise (seeded).
    static func noised(at t: Int, schedule: NoiseSchedule) throws -> (x: Tensor, eps: [Float]) {
        let images = try ImageSources.readIDXImages(path: "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
        var s = UInt64(t + 1) &* 0x9E37_79B9_7F4A_7C15
        func uniform() -> Double {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return (Double(s >> 11) + 0.5) / Double(1 << 53)
        }
        let a = schedule.alphasCumprod[t]
        var eps: [Float] = [], x: [Float] = []
        for image in images.prefix(64) {
            for p in image.pixels {
                let e = Float(sqrt(-2 * log(uniform())) * cos(2 * Double.pi * uniform()))
                eps.append(e)
                x.append(Float(sqrt(a)) * (Float(p) / 127.5 - 1) + Float(sqrt(1 - a)) * e)
            }
        }
        return (Tensor(shape: [64, 1, 28, 28], values: x), eps)
    }

    @Test func headsEstimateWhatTheyWereTrainedFor() throws {
        let bundle = try ModelBundle(directory: Self.bundleDirectory)
        #expect(bundle.covarianceHeads == [.sn, .npr])
        let schedule = NoiseSchedule(.cosine, steps: 1000)
        // The images' own classes, as the heads were trained (90 % of the time; the null class else).
        let labels = Array(try ImageSources.readIDXLabels(path: "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").prefix(64))
        for kind in bundle.covarianceHeads {
            let net = try bundle.makeUNet(covarianceHead: kind)
            var means: [Double] = []
            for t in [100, 500, 900] {
                let (x, eps) = try Self.noised(at: t, schedule: schedule)
                let out = try net.forward(x, timesteps: Array(repeating: t, count: 64), classes: labels)
                let plane = 784, c = out.count / (64 * plane)   // eps, variance, head
                var head = 0.0, error = 0.0
                for n in 0 ..< 64 {
                    for i in 0 ..< plane {
                        let e = Double(out.data[(n * c) * plane + i]), target = Double(eps[n * plane + i])
                        head += Double(out.data[(n * c + c - 1) * plane + i])
                        error += (target - e) * (target - e)
                    }
                }
                head /= Double(64 * plane)
                error /= Double(64 * plane)
                means.append(head)
                if kind == .sn {
                    #expect(abs(head - 1) < 0.1, "SN mean h at t = \(t): \(head), E[eps^2] = 1")
                } else if t <= 500 {
                    // The authors' simple head on this UNet follows the UNet's error (0.17 / 0.04 / 0.004 at
                    // t = 100 / 500 / 900) only within a factor of two where it matters and not at t = 900
                    // (0.037, nine times too large; the covariance there is clamped to 1 either way):
                    // training/README.md says what was tried.
                    #expect(head > error / 2 && head < error * 2, "NPR mean g at t = \(t): \(head), the UNet's error \(error)")
                }
            }
            if kind == .npr {
                #expect(means[0] > means[1] && means[1] > means[2] && means[2] > 0, "NPR mean g falls with t: \(means)")
            }
        }
    }
}
