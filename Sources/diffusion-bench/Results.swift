// The machine-readable results file (docs/bench/results.json): one record per stage, merged
// into the existing file so that a stage can be rerun alone. scripts/bench_report.py renders
// BENCHMARKS.md from it and scripts/bench_plots.py the plots under docs/bench/.
import DiffusionDaemon
import DiffusionEngine
import Foundation

/// What one stage left: its status, its settings and its result.
struct StageRecord<Result: Encodable>: Encodable {
    /// "done", "skipped" (with `reason`) or "failed" (with `reason`).
    var status: String
    var reason: String?
    /// "full" or "quick".
    var variant: String
    /// When the stage ran (ISO 8601, UTC).
    var date: String
    /// The command line that reruns this stage alone.
    var command: String
    /// The run time predicted before the stage ran (from the plan and the engine's measured speed).
    var expectedSeconds: Double?
    /// The run time it took.
    var seconds: Double
    /// The CPU the stage ran on (`MachineInfo.cpu`): figures of different CPUs are not compared.
    var machine: String?
    /// The 1-minute load average (/proc/loadavg) when the stage started and ended: near 0 before
    /// and near the thread count during a stage on a quiet machine.
    var loadAverageBefore: Double?
    var loadAverageAfter: Double?
    var result: Result?
}

/// The 1-minute load average.
func loadAverage() -> Double? {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").first.flatMap { Double($0) }
}

/// The machine and software the numbers were taken on.
struct MachineInfo: Codable {
    var cpu: String
    /// CPU 0's data caches (oneDNN's Winograd blocking follows them).
    var caches: String?
    var cores: Int
    var memoryGib: Double
    var os: String
    var kernel: String
    var swift: String?
    var engine: String
    var onednn: String
    var openblasCore: String
    var ompWaitPolicy: String
    var openblasCoretype: String

    static func current() -> MachineInfo {
        // The CPU as the records name it, labelled with the features the engine's kernels follow.
        let cpu = CPUDescription.current, features = CPUFeatures.current
        let osRelease = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let os = osRelease.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }
            .map { String($0.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\"")) } ?? "unknown"
        var u = utsname()
        uname(&u)
        let kernel = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let env = ProcessInfo.processInfo.environment
        return MachineInfo(
            cpu: cpu.model + (features.avx512 ? (features.amxBF16 ? " (AVX-512, AMX)" : " (AVX-512)") : ""), caches: cpu.cacheSummary,
            cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryGib: (Double(ProcessInfo.processInfo.physicalMemory) / Double(1 << 30) * 10).rounded() / 10,
            os: os, kernel: kernel,
            swift: which("swift").flatMap { programLine($0, ["--version"]) },
            engine: ComputeRuntime.summary, onednn: ComputeRuntime.dnnlVersion, openblasCore: ComputeRuntime.blasCoreName,
            ompWaitPolicy: env["OMP_WAIT_POLICY"] ?? "unset", openblasCoretype: env["OPENBLAS_CORETYPE"] ?? "unset")
    }
}

/// The checkout the numbers were taken from.
struct GitInfo: Codable {
    var commit: String?
    var dirty: Bool?

    static func current() -> GitInfo {
        guard let git = which("git") else { return GitInfo() }
        let commit = programLine(git, ["rev-parse", "HEAD"])
        let status = try? runProgram(git, ["status", "--porcelain", "--untracked-files=no"])
        return GitInfo(commit: commit, dirty: status.map { $0.status == 0 ? !$0.output.isEmpty : nil } ?? nil)
    }
}

/// docs/bench/results.json: read, updated stage by stage, written after each stage.
struct ResultsFile {
    static let schema = "diffusiond-bench/1"
    let path: String
    private var root: [String: Any]

    /// Opens the existing file (a file of another schema is started afresh).
    init(path: String) {
        self.path = path
        if let data = FileManager.default.contents(atPath: path),
           let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
           object["schema"] as? String == Self.schema {
            root = object
        } else {
            root = ["schema": Self.schema, "stages": [String: Any]()]
        }
    }

    /// The machine, the checkout and the date of this run. Stage records from before stages named
    /// their CPU are given the CPU of the run that wrote them, the header's until now.
    mutating func setHeader(machine: MachineInfo, git: GitInfo, invocation: String) {
        if let earlier = (root["machine"] as? [String: Any])?["cpu"] as? String, var stages = root["stages"] as? [String: Any] {
            for (name, value) in stages {
                if var record = value as? [String: Any], record["machine"] == nil { record["machine"] = earlier; stages[name] = record }
            }
            root["stages"] = stages
        }
        root["machine"] = Self.object(machine)
        root["git"] = Self.object(git)
        root["updated"] = Self.isoDate()
        root["invocation"] = invocation
    }

    /// Replaces one stage's record and writes the file. A record of another CPU that this one
    /// replaces is kept under `other_machines` (CPU, then stage). With `mergingRowsByID` (a stage
    /// rerun for some rows only) the rows of the earlier record that the new one lacks are kept,
    /// whichever CPU they ran on (each row names it).
    mutating func setStage<R: Encodable>(_ name: String, _ record: StageRecord<R>, mergingRowsByID: Bool = false) throws {
        var stages = root["stages"] as? [String: Any] ?? [:]
        guard var new = Self.object(record) as? [String: Any] else { return }
        if let old = stages[name] as? [String: Any] {
            if mergingRowsByID {
                new = Self.mergingRows(of: old, into: new)     // kept rows name the CPU they ran on
            } else if let oldCPU = old["machine"] as? String, oldCPU != record.machine, old["status"] as? String == "done" {
                var others = root["other_machines"] as? [String: Any] ?? [:]
                var kept = others[oldCPU] as? [String: Any] ?? [:]
                kept[name] = old
                others[oldCPU] = kept
                root["other_machines"] = others
            }
        }
        stages[name] = new
        root["stages"] = stages
        try write()
    }

    /// `new` with the rows of `old` (by "id") that `new` lacks, in `old`'s order, then `new`'s others.
    static func mergingRows(of old: [String: Any], into new: [String: Any]) -> [String: Any] {
        guard var result = new["result"] as? [String: Any], let newRows = result["rows"] as? [[String: Any]],
              let oldRows = (old["result"] as? [String: Any])?["rows"] as? [[String: Any]] else { return new }
        let byID = Dictionary(newRows.compactMap { row in (row["id"] as? String).map { ($0, row) } }, uniquingKeysWith: { a, _ in a })
        var merged = oldRows.map { row -> [String: Any] in
            if let id = row["id"] as? String, let replaced = byID[id] { return replaced }
            var kept = row
            if kept["machine"] == nil { kept["machine"] = old["machine"] }     // rows from before rows named their CPU
            return kept
        }
        let oldIDs = Set(oldRows.compactMap { $0["id"] as? String })
        merged += newRows.filter { !oldIDs.contains($0["id"] as? String ?? "") }
        result["rows"] = merged
        var out = new
        out["result"] = result
        return out
    }

    func write() throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        var data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        data.append(0x0A)
        let temporary = path + ".tmp"
        try data.write(to: URL(fileURLWithPath: temporary))
        guard rename(temporary, path) == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    /// A value encoded with snake_case keys, as a JSONSerialization object.
    static func object<T: Encodable>(_ value: T) -> Any {
        let enc = JSONEncoder()
        enc.keyEncodingStrategy = .convertToSnakeCase
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let data = try? enc.encode(value), let object = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else {
            return NSNull()
        }
        return object
    }

    static func isoDate(_ date: Date = Date()) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: date)
    }
}
