import CBLAS
import Foundation

/// The instruction-set features of this CPU that decide which kernels the libraries run, read
/// with CPUID (and XCR0, so a feature counts only when the OS saves its registers).
public struct CPUFeatures: Sendable, Equatable, Codable {
    public var avx = false, avx2 = false, fma = false
    /// AVX-512 F, DQ, CD, BW and VL together (what OpenBLAS's SkylakeX kernels need).
    public var avx512 = false
    public var avx512BF16 = false, avx512FP16 = false
    public var amxBF16 = false, amxTile = false, amxInt8 = false

    /// No features (set the ones wanted).
    public init() {}

    /// The features of the CPU this process runs on.
    public static let current: CPUFeatures = {
        let w = diffusiond_read_cpu_words()
        func bit(_ word: UInt32, _ i: Int) -> Bool { word & (1 << UInt32(i)) != 0 }
        let osAVX = w.xcr0 & 0x6 == 0x6, osAVX512 = w.xcr0 & 0xE6 == 0xE6, osAMX = w.xcr0 & 0x60000 == 0x60000
        var f = CPUFeatures()
        f.avx = osAVX && bit(w.leaf1_ecx, 28)
        f.fma = f.avx && bit(w.leaf1_ecx, 12)
        f.avx2 = f.avx && bit(w.leaf7_ebx, 5)
        f.avx512 = osAVX512 && [16, 17, 28, 30, 31].allSatisfy { bit(w.leaf7_ebx, $0) }
        f.avx512BF16 = f.avx512 && bit(w.leaf7_1_eax, 5)
        f.avx512FP16 = f.avx512 && bit(w.leaf7_edx, 23)
        f.amxTile = osAMX && bit(w.leaf7_edx, 24)
        f.amxBF16 = f.amxTile && bit(w.leaf7_edx, 22)
        f.amxInt8 = f.amxTile && bit(w.leaf7_edx, 25)
        return f
    }()

    /// The features named as /proc/cpuinfo's flags line names them.
    public var flagNames: [String] {
        [(avx, "avx"), (avx2, "avx2"), (fma, "fma"), (avx512, "avx512f avx512dq avx512cd avx512bw avx512vl"),
         (avx512BF16, "avx512_bf16"), (avx512FP16, "avx512_fp16"), (amxTile, "amx_tile"), (amxBF16, "amx_bf16"),
         (amxInt8, "amx_int8")].filter(\.0).map(\.1)
    }
}

/// Which OpenBLAS kernels the engine runs, decided from the CPU's own feature flags (never from
/// a list of CPU models): OpenBLAS 0.3.21 does not know every new CPU and then falls back to its
/// SSE3 (Prescott) kernels, at a seventh of the speed. OpenBLAS fixes its choice when it loads,
/// from OPENBLAS_CORETYPE, so a process that would run below its CPU's instruction set restarts
/// itself once with the variable set (`relaunchWithBestKernelsIfNeeded`).
public enum KernelSelection {
    /// The ISA tier of an OpenBLAS kernel family: 1 SSE, 2 AVX, 3 AVX2, 4 AVX-512, 5 AVX-512 + BF16.
    public static func tier(ofOpenBLASCore name: String) -> Int {
        switch name.lowercased() {
        case "cooperlake", "sapphirerapids": 5
        case "skylakex": 4
        case "haswell", "zen": 3
        case "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator": 2
        default: 1
        }
    }

    /// The best OpenBLAS kernel family for `features`, or nil when nothing beyond SSE applies.
    public static func bestOpenBLASCore(for features: CPUFeatures) -> String? {
        if features.avx512 && features.avx512BF16 { return "Cooperlake" }
        if features.avx512 { return "SkylakeX" }
        if features.avx2 && features.fma { return "Haswell" }
        if features.avx { return "Sandybridge" }
        return nil
    }

    /// Set in a restarted process so that it restarts at most once (it holds the OPENBLAS_CORETYPE
    /// the process first found, empty when unset); a child that should choose again clears it.
    public static let markerVariable = "DIFFUSIOND_KERNELS_SELECTED"
    /// Set to 1 to keep the environment's OPENBLAS_CORETYPE even when it is below the CPU's best.
    public static let keepVariable = "DIFFUSIOND_KEEP_OPENBLAS_CORETYPE"

    /// What was chosen and why, for the log and the environment record.
    public struct Choice: Sendable, Equatable, Codable {
        /// The kernel family OpenBLAS runs now.
        public var openBLASCore: String
        /// The best family for this CPU's flags.
        public var bestOpenBLASCore: String?
        /// OPENBLAS_CORETYPE as the process found it before any restart ("unset" when it was).
        public var environmentCoreType: String
        /// The CPU features the choice was made from.
        public var features: [String]

        /// One line for logs.
        public var summary: String {
            let best = bestOpenBLASCore.map { " (best for this CPU: \($0))" } ?? ""
            return "OpenBLAS \(openBLASCore) kernels\(best), OPENBLAS_CORETYPE was \(environmentCoreType), CPU flags: \(features.joined(separator: " "))"
        }
    }

    /// The choice in effect in this process.
    public static var current: Choice {
        let env = ProcessInfo.processInfo.environment
        return Choice(openBLASCore: ComputeRuntime.blasCoreName, bestOpenBLASCore: bestOpenBLASCore(for: .current),
                      environmentCoreType: env[markerVariable].map { $0.isEmpty ? "unset" : $0 } ?? env["OPENBLAS_CORETYPE"] ?? "unset",
                      features: CPUFeatures.current.flagNames)
    }

    /// The environment changes that make the libraries run their best kernels here: OPENBLAS_CORETYPE
    /// when OpenBLAS's own choice is below the CPU's tier, OMP_WAIT_POLICY=passive when unset (idle
    /// OpenMP threads otherwise spin and starve other work on a small machine). Empty when none.
    public static func environmentChanges(loadedCore: String, features: CPUFeatures,
                                          environment: [String: String]) -> [String: String] {
        var changes: [String: String] = [:]
        if let best = bestOpenBLASCore(for: features), tier(ofOpenBLASCore: loadedCore) < tier(ofOpenBLASCore: best),
           environment[keepVariable] != "1" {
            changes["OPENBLAS_CORETYPE"] = best
        }
        if environment["OMP_WAIT_POLICY"] == nil { changes["OMP_WAIT_POLICY"] = "passive" }
        return changes
    }

    /// How a restart treats OMP_WAIT_POLICY.
    public enum WaitPolicy: Sendable {
        /// Set it to passive when it is unset (the daemon's and the CLI's choice).
        case passiveIfUnset
        /// Set it to this value when it differs.
        case exactly(String)
        /// Leave it as the environment has it.
        case inherit
    }

    /// Restarts the process (same pid, same arguments) once with `environmentChanges` applied, when
    /// there are any; returns when nothing needs changing or the process was restarted already.
    public static func relaunchWithBestKernelsIfNeeded(waitPolicy: WaitPolicy = .passiveIfUnset) {
        let env = ProcessInfo.processInfo.environment
        guard env[markerVariable] == nil else { return }
        var changes = environmentChanges(loadedCore: ComputeRuntime.blasCoreName, features: .current, environment: env)
        switch waitPolicy {
        case .passiveIfUnset: break
        case .inherit: changes["OMP_WAIT_POLICY"] = nil
        case .exactly(let value): changes["OMP_WAIT_POLICY"] = env["OMP_WAIT_POLICY"] == value ? nil : value
        }
        guard !changes.isEmpty else { return }
        setenv(markerVariable, env["OPENBLAS_CORETYPE"] ?? "", 1)
        for (key, value) in changes { setenv(key, value, 1) }
        let argv = CommandLine.arguments.map { strdup($0) } + [nil]
        execv("/proc/self/exe", argv)
    }
}
