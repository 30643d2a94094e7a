import DiffusionEngine
import Foundation
import ModelBundles
import Testing
@testable import DiffusionEngine

/// The exact SN or NPR head of Gaussian data N(mu, s^2) per element, appended to GaussianDataPredictor's output:
/// SN h = E[eps^2 | x_t] = eps*^2 + Var[eps | x_t], NPR g = E[(eps - eps*)^2 | x_t] = Var[eps | x_t],
/// Var[eps | x_t] = abar s^2 / (abar s^2 + 1 - abar).
final class GaussianHeadPredictor: NoisePredictor {
    let base: GaussianDataPredictor
    let head: CovarianceHeadKind
    init(_ base: GaussianDataPredictor, head: CovarianceHeadKind) { self.base = base; self.head = head }
    var outputChannels: Int { base.outputChannels + 1 }
    var covarianceHead: CovarianceHeadKind? { head }

    func predict(_ x: Tensor, timesteps: [Int], classes: [Int]?) throws -> Tensor {
        let raw = try base.predict(x, timesteps: timesteps, classes: classes)
        let n = x.shape[0], per = x.count / n, rawPer = raw.count / n
        let out = Tensor(shape: [n, outputChannels] + Array(x.shape.dropFirst(2)))
        let s2 = base.standardDeviation * base.standardDeviation
        for image in 0..<n {
            let abar = base.schedule.alphasCumprod[timesteps[image]]
            let variance = abar * s2 / (abar * s2 + 1 - abar)
            (out.data + image * (rawPer + per)).update(from: raw.data + image * rawPer, count: rawPer)
            for j in 0..<per {
                let eps = Double(raw.data[image * rawPer + j])
                out.data[image * (rawPer + per) + rawPer + j] = Float(head == .sn ? eps * eps + variance : variance)
            }
        }
        return out
    }
}

@Suite struct CovarianceHeadTests {
    static let base = NoiseSchedule(.cosine, steps: 1000)

    /// The head computed in the UNet's forward pass against PyTorch (float64) on the tiny bundles;
    /// the eps channels are unchanged by the head.
    @Test(arguments: ["tiny-unet-cond", "tiny-unet-uncond"])
    func headMatchesPyTorch(_ name: String) throws {
        let f = try FixtureCase(name)
        let dir = fixturesDirectory.appendingPathComponent("bundles").appendingPathComponent(name)
        let ref = try SafeTensors(bytes: try Data(contentsOf: dir.appendingPathComponent("heads-io.safetensors")))
        #expect(f.bundle.covarianceHeads == [.sn])
        let net = try f.bundle.makeUNet(covarianceHead: .sn)
        #expect(net.covarianceHead == .sn)
        let x = try f.io.tensor("x"), t = try f.io.integers("t")
        let y = f.io.entries["y"] == nil ? nil : try f.io.integers("y")
        let out = try net.forward(x, timesteps: t, classes: y)
        let refOut = try ref.tensor("out"), refHead = try ref.tensor("head")
        let n = x.shape[0], oc = refOut.shape[1], hc = refHead.shape[1], plane = x.shape[2] * x.shape[3]
        #expect(out.shape == [n, oc + hc, x.shape[2], x.shape[3]])
        var eps: [Float] = [], head: [Float] = []
        let all = out.array, stride: Int = (oc + hc) * plane, split: Int = oc * plane
        for i in 0..<n {
            let start: Int = i * stride
            eps.append(contentsOf: all[start..<(start + split)])
            head.append(contentsOf: all[(start + split)..<(start + stride)])
        }
        let epsError = relativeError(Tensor(shape: refOut.shape, values: eps), refOut)
        let headError = relativeError(Tensor(shape: refHead.shape, values: head), refHead)
        #expect(epsError < 1e-4, "\(name): eps relative error \(epsError)")
        #expect(headError < 1e-4, "\(name): head relative error \(headError)")
        // Through the sampler adapter (batches of 64: other oneDNN bits, the same values).
        let adapter = UNetNoisePredictor(net)
        #expect(adapter.covarianceHead == .sn && adapter.outputChannels == oc + hc)
        let predicted = try adapter.predict(x, timesteps: t, classes: y)
        let adapterError = relativeError(predicted, out)
        #expect(adapterError < 1e-5, "\(name): adapter relative error \(adapterError)")
        #expect(throws: (any Error).self) { try f.bundle.makeUNet(covarianceHead: .npr) }
        // Wrong keys are refused at load.
        #expect(throws: (any Error).self) {
            try ADMUNet(try f.bundle.makeUNet(), covarianceHead: .sn, weights: ["out2.0.weight": Tensor(shape: [3])])
        }
    }

    /// One step of each sampler against the float64 numpy reference (Tests/Fixtures/covariance-steps.safetensors).
    @Test func oneStepMatchesReference() throws {
        let r = try FixtureReader(FixtureReader.fixtures.appendingPathComponent("covariance-steps.safetensors"))
        let schedule = try RespacedSchedule(base: Self.base, respacing: .sections([10]))
        #expect(schedule.timesteps == r.integers("timesteps"))
        let kinds: [(String, CovarianceHeadKind, CovarianceHeadSampler.StepType, Double)] =
            [("sn_ddpm", .sn, .ddpm, 0), ("sn_ddim", .sn, .ddim, 0), ("npr_ddpm", .npr, .ddpm, 0), ("npr_ddim", .npr, .ddim, 0.5)]
        for i in [5, 1, 0] {
            let x0 = r.floats("i\(i).x"), eps = r.floats("i\(i).eps"), z = r.floats("i\(i).z")
            for (kind, head, type, eta) in kinds {
                let sampler = CovarianceHeadSampler(schedule: schedule, head: head, type: type, eta: eta, prediction: .epsilon,
                                                    clipDenoised: true, lastStepClipFactor: 1)
                let h = r.floats("i\(i).\(kind).head")
                let per = 64, n = 3
                var output: [Float] = []
                for image in 0..<n {
                    let start: Int = image * per
                    output.append(contentsOf: eps[start..<(start + per)])
                    output.append(contentsOf: h[start..<(start + per)])
                }
                let x = Tensor(shape: [n, 1, 8, 8], values: x0)
                let step = sampler.stepCount - 1 - i
                #expect(sampler.usesNoise(at: step) == (i != 0))
                sampler.step(step, x: x, modelOutput: Tensor(shape: [n, 2, 8, 8], values: output), classifierGuidance: nil,
                             noise: i == 0 ? nil : Tensor(shape: [n, 1, 8, 8], values: z))
                let expected = r.floats("i\(i).\(kind).x_prev")
                let worst = zip(x.array, expected).map { abs($0 - $1) }.max()!
                #expect(worst < 1e-4, "\(kind) at respaced index \(i): max difference \(worst)")
            }
        }
    }

    /// On Gaussian data the exact heads give the exact posterior covariance Cov[x0 | x_t] = s^2 (1 - abar)/(abar s^2 + 1 - abar)
    /// (clamped to 1), the optimum both methods estimate; it is also Analytic-DPM's scalar covariance with the exact
    /// Gamma table, so SN-DDPM / NPR-DDPM chains equal Analytic-DDPM's (and the DDIM types Analytic-DDIM's).
    @Test func gaussianDataRecoversTheOptimalCovariance() throws {
        let s = 0.5, mu = 0.2, s2 = s * s
        for head in CovarianceHeadKind.allCases {
            let predictor = GaussianHeadPredictor(GaussianDataPredictor(schedule: Self.base, mean: mu, standardDeviation: s), head: head)
            for t in [0, 10, 100, 300, 600, 900, 999] {
                let abar = Self.base.alphasCumprod[t]
                let x = Tensor(shape: [1, 1, 4, 4], values: (0..<16).map { Float($0) / 8 - 1 })
                let out = try predictor.predict(x, timesteps: [t], classes: nil)
                let exact = min(s2 * (1 - abar) / (abar * s2 + 1 - abar), 1)
                for j in 0..<16 {
                    let eps = SIMD16<Float>(repeating: out.data[j]), hv = SIMD16<Float>(repeating: out.data[16 + j])
                    let cov = CovarianceHeadSampler.covariance(head, scale: Float((1 - abar) / abar), headValue: hv, eps: eps)[0]
                    // SN subtracts eps^2 from h ~ eps^2 + Var in float32: its rounding, magnified by betabar/abar,
                    // is all that separates it from the optimum (at t = 999 that is the whole [0, 1]).
                    let rounding = head == .sn ? (1 - abar) / abar * 1.2e-7 * max(Double(hv[0]), 1) : 0
                    #expect(abs(Double(cov) - exact) <= 1e-4 * exact + rounding + 1e-6, "\(head) t = \(t): \(cov) vs \(exact)")
                }
            }
            for (kind, analytic) in head == .sn ? [(SamplerKind.snDDPM, SamplerKind.analyticDDPM), (.snDDIM, .analyticDDIM)]
                                                : [(.nprDDPM, .analyticDDPM), (.nprDDIM, .analyticDDIM)] {
                var c = SamplingConfiguration()
                c.diffusion.variance = .fixedSmall
                c.respacing = .ddim(10)  // 0, 100, ..., 900: clear of t = 999, where SN's float32 h - eps^2 is noise
                c.sampler = kind
                c.eta = kind == .snDDIM || kind == .nprDDIM ? 0.5 : 0
                c.seed = 3
                let shape = ImageShape(channels: 1, height: 8, width: 8)
                let got = try SamplingPipeline(configuration: c, predictor: predictor, imageShape: shape)
                    .generate(imageIndices: Array(0..<4), classes: nil)
                c.sampler = analytic
                let plain = GaussianDataPredictor(schedule: Self.base, mean: mu, standardDeviation: s)
                let want = try SamplingPipeline(configuration: c, predictor: plain, gammaTable: plain.gammaTable, imageShape: shape)
                    .generate(imageIndices: Array(0..<4), classes: nil)
                let worst = zip(got.array, want.array).map { abs($0 - $1) }.max()!
                #expect(worst < 2e-4, "\(kind.rawValue) vs \(analytic.rawValue): max difference \(worst)")
            }
        }
    }

    /// The pipeline names what is missing or does not combine.
    @Test func pipelineValidation() throws {
        let plain = GaussianDataPredictor(schedule: Self.base, mean: 0, standardDeviation: 0.5)
        let shape = ImageShape(channels: 1, height: 4, width: 4)
        var c = SamplingConfiguration()
        c.diffusion.variance = .fixedSmall
        c.respacing = .sections([10])
        c.sampler = .snDDPM
        #expect(throws: SamplingError.self) { try SamplingPipeline(configuration: c, predictor: plain, imageShape: shape) }
        let npr = GaussianHeadPredictor(plain, head: .npr)
        #expect(throws: SamplingError.self) { try SamplingPipeline(configuration: c, predictor: npr, imageShape: shape) }
        let sn = GaussianHeadPredictor(plain, head: .sn)
        _ = try SamplingPipeline(configuration: c, predictor: sn, imageShape: shape)
        c.guidance = .classifierFree
        c.nullClass = 0
        #expect(throws: SamplingError.self) { try SamplingPipeline(configuration: c, predictor: sn, imageShape: shape) }
        c.sampler = .nprDDIM
        _ = try SamplingPipeline(configuration: c, predictor: npr, imageShape: shape)
        c.guidance = .none
        c.sampler = .ddim
        #expect(throws: SamplingError.self) { try SamplingPipeline(configuration: c, predictor: sn, imageShape: shape) }
    }
}
