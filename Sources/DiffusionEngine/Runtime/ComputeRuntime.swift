import CBLAS
import CDNNL
import Foundation

/// Thread counts and library identification for the engine's compute back ends.
///
/// OpenBLAS has its own pthread pool; oneDNN and the engine's SIMD kernels share
/// libgomp's OpenMP pool. Network evaluation calls them strictly one after the
/// other, so the two pools never compute at the same time.
public enum ComputeRuntime {
    nonisolated(unsafe) private static var blasCount = ProcessInfo.processInfo.activeProcessorCount
    nonisolated(unsafe) private static var ompCount = ProcessInfo.processInfo.activeProcessorCount
    nonisolated(unsafe) private static var configured = false

    /// Number of online CPU cores.
    public static var coreCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Sets the OpenBLAS and the oneDNN/OpenMP thread counts (nil keeps the current value; default = cores).
    public static func configure(blasThreads: Int? = nil, dnnlThreads: Int? = nil) {
        if let b = blasThreads { blasCount = max(1, b) }
        if let d = dnnlThreads { ompCount = max(1, d) }
        openblas_set_num_threads(Int32(blasCount))
        omp_set_num_threads(Int32(ompCount))
        configured = true
    }

    /// Threads OpenBLAS uses for one matrix product.
    public static var blasThreads: Int { blasCount }

    /// Threads oneDNN and the engine's SIMD kernels use (one OpenMP team).
    public static var dnnlThreads: Int { ompCount }

    /// The BLAS kernel family OpenBLAS selected for this CPU (e.g. "Cooperlake", "Haswell").
    public static var blasCoreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// OpenBLAS's build configuration string.
    public static var blasConfig: String {
        guard let c = openblas_get_config() else { return "unknown" }
        return String(cString: c)
    }

    /// The oneDNN version as "major.minor.patch".
    public static var dnnlVersion: String {
        guard let v = dnnl_version()?.pointee else { return "unknown" }
        return "\(v.major).\(v.minor).\(v.patch)"
    }

    /// One line describing the back ends and thread counts, for logs.
    public static var summary: String {
        "OpenBLAS \(blasCoreName) (\(blasThreads) threads), oneDNN \(dnnlVersion) (\(dnnlThreads) OpenMP threads)"
    }

    /// Environment settings that slow the back ends down, one sentence each, for the daemon's log.
    /// Both are read when the libraries load, so they must be fixed before the process starts.
    public static var environmentWarnings: [String] {
        let env = ProcessInfo.processInfo.environment
        var warnings: [String] = []
        if let best = KernelSelection.bestOpenBLASCore(for: .current),
           KernelSelection.tier(ofOpenBLASCore: blasCoreName) < KernelSelection.tier(ofOpenBLASCore: best) {
            warnings.append("OpenBLAS runs its \(blasCoreName) kernels although this CPU supports \(best) (OPENBLAS_CORETYPE=\(env["OPENBLAS_CORETYPE"] ?? "unset")); matrix products run at a fraction of their speed")
        }
        if env["OMP_WAIT_POLICY"] == nil && dnnlThreads > 1 {
            warnings.append("OMP_WAIT_POLICY is unset: idle OpenMP threads spin between kernels, which slows evaluation several-fold when other processes share the cores; set OMP_WAIT_POLICY=passive on shared machines")
        }
        return warnings
    }

    /// Applies the configured thread counts to the calling thread (OpenMP settings are per thread).
    static func prepareCallingThread() {
        if !configured { configure() }
        omp_set_num_threads(Int32(ompCount))
    }

    /// Runs `body(lane)` on `lanes` threads of one OpenMP team, every kernel inside single-threaded:
    /// oneDNN, the SIMD kernels (they run inline inside a team) and OpenBLAS (set to one thread for
    /// the region). One team per call instead of one per kernel: the lanes meet once, at the end.
    static func inSingleThreadedLanes(_ lanes: Int, _ body: (Int) -> Void) {
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(blasCount)) }
        openMPTeam(threads: max(lanes, 1)) { lane, _ in
            omp_set_num_threads(1)
            // Subnormal results flush to zero (FTZ) and subnormal inputs read as zero (DAZ), the
            // same for every lane, so no lane's arithmetic takes the CPU's slow subnormal path
            // (a guard: its gain was not measured apart from the other changes of its commit).
            let saved = diffusiond_get_mxcsr()
            diffusiond_set_mxcsr(saved | 0x8040)
            defer { diffusiond_set_mxcsr(saved) }
            body(lane)
        }
    }

    /// Runs `body` with oneDNN creating its primitives for one thread on the calling thread.
    static func singleThreaded<T>(_ body: () -> T) -> T {
        omp_set_num_threads(1)
        defer { omp_set_num_threads(Int32(ompCount)) }
        return body()
    }
}

/// The closure a parallel region runs on every thread of the team.
private struct ParallelJob {
    let body: (Int, Int) -> Void
}

/// Runs `body(thread, threadCount)` on every thread of an OpenMP team (the pool oneDNN uses).
@inline(__always)
func parallelRegion(threads: Int, _ body: (Int, Int) -> Void) {
    // Inside a team (a lane of `inSingleThreadedLanes`) every kernel runs on its own thread.
    if threads <= 1 || omp_get_level() > 0 { body(0, 1); return }
    openMPTeam(threads: threads, body)
}

/// `body(thread, threadCount)` on a team of `threads` libgomp threads (also for one: the region counts).
@inline(__always)
private func openMPTeam(threads: Int, _ body: (Int, Int) -> Void) {
    withoutActuallyEscaping(body) { escaping in
        var job = ParallelJob(body: escaping)
        withUnsafeMutablePointer(to: &job) { pointer in
            GOMP_parallel({ raw in
                let job = raw!.assumingMemoryBound(to: ParallelJob.self)
                job.pointee.body(Int(omp_get_thread_num()), Int(omp_get_num_threads()))
            }, pointer, UInt32(threads), 0)
        }
    }
}

/// Splits 0..<count into contiguous chunks run in parallel; small jobs (work < grain) run inline.
@inline(__always)
func parallelFor(_ count: Int, work: Int = .max, grain: Int = 32_768, _ body: (Range<Int>) -> Void) {
    let threads = min(ComputeRuntime.dnnlThreads, count)
    if threads <= 1 || work < grain { if count > 0 { body(0..<count) }; return }
    parallelRegion(threads: threads) { t, n in
        let lo = count * t / n, hi = count * (t + 1) / n
        if lo < hi { body(lo..<hi) }
    }
}
