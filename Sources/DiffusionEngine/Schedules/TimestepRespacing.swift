import Foundation

/// Which of the T training timesteps a sampler visits.
///
/// Encoded as one string (the provenance record keeps what the user typed):
/// `""` all T steps; guided-diffusion forms `"ddim50"`, `"250"`, `"10,15,20"`;
/// diffusers forms `"leading50"`, `"trailing50"`, `"linspace50"`, and `"dpmsolver50"` (the "linspace"
/// spacing of diffusers' DPMSolverMultistepScheduler, which differs from the other schedulers').
public enum TimestepRespacing: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Every timestep 0..<T.
    case full
    /// guided-diffusion "ddimN": the smallest integer stride i >= 1 with len(range(0, T, i)) == N.
    case ddim(Int)
    /// guided-diffusion section counts: T split into equal sections (the first T mod n one longer),
    /// each spaced evenly with a fractional stride and Python's round-half-to-even.
    case sections([Int])
    /// diffusers "leading": k * (T / N) (integer division) for k in 0..<N.
    case leading(Int)
    /// diffusers "trailing": `np.round(np.arange(T, 0, -T/N)) - 1`, bit for bit (see `diffusersTrailing`),
    /// without the final -1 that numpy's arange adds for some N (it is not a timestep).
    case trailing(Int)
    /// diffusers "linspace": round(linspace(0, T - 1, N)).
    case linspace(Int)
    /// diffusers DPMSolverMultistepScheduler "linspace": round(linspace(0, T - 1, N + 1)) without its
    /// first entry 0 (the solver's last step goes from the smallest kept timestep to sigma = 0).
    case dpmSolver(Int)

    /// Parses the string form; throws `SamplingError.invalidSetting` naming "respacing" on bad input.
    public init(parsing text: String) throws {
        let s = text.trimmingCharacters(in: .whitespaces)
        func count(_ body: Substring) throws -> Int {
            guard let n = Int(body), n >= 1 else {
                throw SamplingError.invalidSetting(name: "respacing", reason: "'\(text)' needs a positive step count")
            }
            return n
        }
        if s.isEmpty || s == "full" { self = .full; return }
        let prefixed: [(String, (Int) -> TimestepRespacing)] = [
            ("ddim", { .ddim($0) }), ("leading", { .leading($0) }),
            ("trailing", { .trailing($0) }), ("linspace", { .linspace($0) }),
            ("dpmsolver", { .dpmSolver($0) }),
        ]
        for (prefix, make) in prefixed where s.hasPrefix(prefix) {
            self = make(try count(s.dropFirst(prefix.count)))
            return
        }
        let parts = s.split(separator: ",", omittingEmptySubsequences: false)
        let counts = parts.map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty, counts.allSatisfy({ $0 != nil && $0! >= 0 }), counts.reduce(0, { $0 + $1! }) >= 1 else {
            throw SamplingError.invalidSetting(
                name: "respacing",
                reason: "'\(text)' is not one of \"\", ddimN, a comma list of section counts, leadingN, trailingN, linspaceN, dpmsolverN")
        }
        self = .sections(counts.map { $0! })
    }

    /// The string form, as parsed by `init(parsing:)`.
    public var description: String {
        switch self {
        case .full: return ""
        case .ddim(let n): return "ddim\(n)"
        case .sections(let c): return c.map(String.init).joined(separator: ",")
        case .leading(let n): return "leading\(n)"
        case .trailing(let n): return "trailing\(n)"
        case .linspace(let n): return "linspace\(n)"
        case .dpmSolver(let n): return "dpmsolver\(n)"
        }
    }

    /// Decodes the string form.
    public init(from decoder: any Decoder) throws {
        self = try TimestepRespacing(parsing: try decoder.singleValueContainer().decode(String.self))
    }

    /// Encodes the string form.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    /// The kept original timesteps in ascending order for a T-step model.
    public func timesteps(trainingSteps t: Int) throws -> [Int] {
        func fail(_ reason: String) -> SamplingError { .invalidSetting(name: "respacing", reason: "'\(description)' at T = \(t): \(reason)") }
        func checkCount(_ n: Int) throws {
            guard n >= 1, n <= t else { throw fail("the step count must lie in 1...\(t)") }
        }
        let kept: [Int]
        switch self {
        case .full:
            kept = Array(0..<t)
        case .ddim(let n):
            guard let stride = (1..<max(t, 1)).first(where: { (t + $0 - 1) / $0 == n }) else {
                throw fail("no integer stride gives exactly \(n) steps")
            }
            kept = Array(Swift.stride(from: 0, to: t, by: stride))
        case .sections(let counts):
            let sizePer = t / counts.count, extra = t % counts.count
            var start = 0
            var steps: [Int] = []
            for (i, sectionCount) in counts.enumerated() {
                let size = sizePer + (i < extra ? 1 : 0)
                guard size >= sectionCount else { throw fail("cannot divide a section of \(size) steps into \(sectionCount)") }
                // The fractional index is accumulated by repeated addition, exactly as the reference does;
                // the closed form start + round(k (S-1)/(K-1)) differs from it for some (S, K).
                let stride = sectionCount <= 1 ? 1.0 : Double(size - 1) / Double(sectionCount - 1)
                var index = 0.0
                for _ in 0..<sectionCount {
                    steps.append(start + Int(index.rounded(.toNearestOrEven)))
                    index += stride
                }
                start += size
            }
            kept = steps
        case .leading(let n):
            try checkCount(n)
            kept = (0..<n).map { $0 * (t / n) }
        case .trailing(let n):
            try checkCount(n)
            // diffusers' list, less the -1 it ends with for some N (62 of the N in 1...1000 at T = 1000):
            // diffusers would run a step "at t = -1", indexing alphas_cumprod[-1] (the last timestep's);
            // here those N sample exactly the N timesteps diffusers visits before it.
            kept = Self.diffusersTrailing(trainingSteps: t, count: n).filter { $0 >= 0 }
        case .linspace(let n):
            try checkCount(n)
            kept = BetaSchedule.evenlySpaced(from: 0, to: Double(t - 1), count: n).map { Int($0.rounded(.toNearestOrEven)) }
        case .dpmSolver(let n):
            try checkCount(n)
            kept = BetaSchedule.evenlySpaced(from: 0, to: Double(t - 1), count: n + 1).dropFirst().map { Int($0.rounded(.toNearestOrEven)) }
        }
        let sorted = Array(Set(kept)).sorted()
        guard let first = sorted.first, first >= 0, sorted.last! < t else { throw fail("timesteps fall outside 0..<\(t)") }
        return sorted
    }
}

extension TimestepRespacing {
    /// `np.arange(T, 0, -T/N)` in float64, value for value as numpy computes it: the length is
    /// `ceil((0 - T) / step)`, entry 1 is `T + step`, and every later entry i is `T + i * delta` with
    /// `delta = (T + step) - T` (numpy's fill, which differs from `step` in its last bits).
    static func numpyArange(from start: Double, to stop: Double, step: Double) -> [Double] {
        let length = ((stop - start) / step).rounded(.up)
        guard length.isFinite, length >= 1 else { return [] }
        let count = Int(length)
        let next = start + step
        let delta = next - start
        var values = [start]
        if count > 1 { values.append(next) }
        if count > 2 {
            for i in 2 ..< count { values.append(start + Double(i) * delta) }
        }
        return values
    }

    /// diffusers' `trailing` spacing exactly as `DDIMScheduler.set_timesteps` / `DDPMScheduler.set_timesteps`
    /// return it, in its order (descending): `np.round(np.arange(T, 0, -T/N)).astype(np.int64) - 1`,
    /// numpy's round being half to even. For some N this has N + 1 entries, the last one -1.
    public static func diffusersTrailing(trainingSteps t: Int, count n: Int) -> [Int] {
        guard t >= 1, n >= 1 else { return [] }
        let stepRatio = Double(t) / Double(n)
        return numpyArange(from: Double(t), to: 0, step: -stepRatio).map { Int($0.rounded(.toNearestOrEven)) - 1 }
    }
}

/// A sampling schedule: the kept original timesteps and the schedule that jumps between them.
public struct RespacedSchedule: Sendable, Hashable {
    /// Original timestep indices, ascending; `timesteps[i]` is what the network sees at respaced index i.
    public let timesteps: [Int]
    /// The respaced schedule, indexed by respaced index.
    public let schedule: NoiseSchedule

    /// Respaces `base` (the full T-step schedule) according to `respacing`.
    public init(base: NoiseSchedule, respacing: TimestepRespacing) throws {
        timesteps = try respacing.timesteps(trainingSteps: base.count)
        schedule = base.respaced(keeping: timesteps)
    }

    /// Number of respaced steps.
    public var count: Int { timesteps.count }
}
