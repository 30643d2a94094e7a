import DiffusionEngine
import Foundation
import Testing

/// The kernel choice against the CPU's flags as /proc/cpuinfo lists them, in a real diffusiond
/// process started with each kind of OPENBLAS_CORETYPE a machine may export.
@Suite struct KernelSelectionTests {
    /// The flags of the first processor in /proc/cpuinfo (nil where there is none: not Linux x86).
    static func cpuinfoFlags() -> Set<String>? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        return Set(line.split(separator: ":", maxSplits: 1)[1].split(separator: " ").map(String.init))
    }

    /// The tier OpenBLAS's kernels must reach on a CPU with these flags (OpenBLAS 0.3.21's families).
    static func expectedTier(_ flags: Set<String>) -> Int {
        let avx512 = ["avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"].allSatisfy(flags.contains)
        if avx512 && flags.contains("avx512_bf16") { return 5 }
        if avx512 { return 4 }
        if flags.contains("avx2") && flags.contains("fma") { return 3 }
        if flags.contains("avx") { return 2 }
        return 1
    }

    static var binary: String {
        let exeDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
        let candidates = [exeDir + "/diffusiond", packageRoot + "/.build/release/diffusiond", packageRoot + "/.build/debug/diffusiond"]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    @Test func engineFeaturesAgreeWithCpuinfo() throws {
        let flags = try #require(Self.cpuinfoFlags(), "no flags line in /proc/cpuinfo")
        let f = CPUFeatures.current
        #expect(f.avx2 == flags.contains("avx2"))
        #expect(f.fma == flags.contains("fma"))
        #expect(f.avx512 == ["avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl"].allSatisfy(flags.contains))
        #expect(f.avx512BF16 == flags.contains("avx512_bf16"))
        #expect(f.amxBF16 == flags.contains("amx_bf16"))
        #expect(f.avx512FP16 == flags.contains("avx512_fp16"))
        let best = KernelSelection.bestOpenBLASCore(for: f)
        #expect(KernelSelection.tier(ofOpenBLASCore: best ?? "Prescott") == Self.expectedTier(flags))
    }

    /// Whatever OPENBLAS_CORETYPE says (unset, a slow family, the environment's Haswell), the daemon's
    /// OpenBLAS runs kernels of the CPU's own tier and reports what it found; with the keep switch the
    /// environment's choice stands.
    @Test(arguments: [nil, "Prescott", "Haswell", "SkylakeX"] as [String?])
    func daemonRunsTheBestKernels(_ coreType: String?) throws {
        let flags = try #require(Self.cpuinfoFlags(), "no flags line in /proc/cpuinfo")
        let report = try Self.showKernels(coreType: coreType)
        let chosen = try #require(report["open_blas_core"] as? String)
        let tier = KernelSelection.tier(ofOpenBLASCore: chosen)
        #expect(tier == Self.expectedTier(flags), "\(chosen) for OPENBLAS_CORETYPE=\(coreType ?? "unset")")
        #expect(report["environment_core_type"] as? String == coreType ?? "unset")
        #expect((report["features"] as? [String])?.contains("avx2") == flags.contains("avx2"))
    }

    @Test func keepSwitchLeavesTheEnvironmentsChoice() throws {
        let report = try Self.showKernels(coreType: "Prescott", keep: true)
        #expect(report["open_blas_core"] as? String == "Prescott")
    }

    @Test func environmentChangesAreMinimal() {
        var f = CPUFeatures()
        f.avx = true; f.avx2 = true; f.fma = true; f.avx512 = true
        #expect(KernelSelection.environmentChanges(loadedCore: "Prescott", features: f, environment: [:]) ==
                ["OPENBLAS_CORETYPE": "SkylakeX", "OMP_WAIT_POLICY": "passive"])
        #expect(KernelSelection.environmentChanges(loadedCore: "SkylakeX", features: f, environment: ["OMP_WAIT_POLICY": "active"]).isEmpty)
        #expect(KernelSelection.environmentChanges(loadedCore: "Haswell", features: f,
                                                   environment: ["OMP_WAIT_POLICY": "passive", KernelSelection.keepVariable: "1"]).isEmpty)
    }

    static func showKernels(coreType: String?, keep: Bool = false) throws -> [String: Any] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["--show-kernels"]
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_CORETYPE"] = coreType
        env[KernelSelection.markerVariable] = nil
        env[KernelSelection.keepVariable] = keep ? "1" : nil
        p.environment = env
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }
}
