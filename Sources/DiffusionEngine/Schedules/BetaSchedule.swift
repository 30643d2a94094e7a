import Foundation

/// The family of noise schedules a model was trained with (model.json `diffusion.schedule`).
public enum BetaSchedule: String, Codable, Sendable, Hashable, CaseIterable {
    /// Ho et al.: betas evenly spaced from 1e-4 * 1000/T to 0.02 * 1000/T.
    case linear
    /// Nichol & Dhariwal: alphabar follows cos^2 with offset s = 0.008, betas clipped at 0.999.
    case cosine

    /// The T betas of this schedule in float64, computed as the reference implementation does.
    public func betas(steps: Int) -> [Double] {
        ensure(steps >= 1, "a schedule needs at least one step")
        switch self {
        case .linear:
            let scale = 1000.0 / Double(steps)
            return Self.evenlySpaced(from: scale * 1e-4, to: scale * 0.02, count: steps)
        case .cosine:
            let t = Double(steps)
            func alphaBar(_ u: Double) -> Double {
                let c = cos((u + 0.008) / 1.008 * Double.pi / 2)
                return c * c
            }
            return (0..<steps).map { i in
                min(1 - alphaBar(Double(i + 1) / t) / alphaBar(Double(i) / t), 0.999)
            }
        }
    }

    /// `count` values from `start` to `stop` inclusive, spaced as numpy.linspace spaces them.
    static func evenlySpaced(from start: Double, to stop: Double, count: Int) -> [Double] {
        guard count > 1 else { return count == 1 ? [start] : [] }
        let step = (stop - start) / Double(count - 1)
        var values = (0..<count).map { Double($0) * step + start }
        values[count - 1] = stop
        return values
    }
}
