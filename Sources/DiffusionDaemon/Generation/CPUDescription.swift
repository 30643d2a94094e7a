import Foundation

/// This CPU's model name and cache sizes as Linux reports them (/proc/cpuinfo and
/// /sys/devices/system/cpu/cpu0/cache). Beside the feature flags they are what decides the bits
/// of an fp32 image: oneDNN 2.6 sizes its Winograd blocking and schedule from the per-core L1, L2
/// and last-level cache sizes, so two CPUs with the same flags but other caches may round the
/// same sums differently. Records name both.
public struct CPUDescription: Sendable, Equatable {
    /// One data or unified cache level of CPU 0.
    public struct Cache: Sendable, Equatable {
        public var level: Int
        public var bytes: Int
        /// Logical CPUs that share it (1 for a per-core cache).
        public var sharedBy: Int

        public init(level: Int, bytes: Int, sharedBy: Int) { self.level = level; self.bytes = bytes; self.sharedBy = sharedBy }
    }

    /// /proc/cpuinfo's "model name" of the first processor ("unknown" where there is none).
    public var model: String
    /// The data and unified caches by level (instruction caches left out).
    public var caches: [Cache]

    /// The CPU this process runs on.
    public static let current = CPUDescription(cpuinfo: try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
                                               cacheDirectory: "/sys/devices/system/cpu/cpu0/cache")

    /// Reads the model from `cpuinfo`'s text and the caches from a sysfs cache folder (index0, index1, ...).
    public init(cpuinfo: String?, cacheDirectory: String) {
        let line = cpuinfo?.split(separator: "\n").first { $0.hasPrefix("model name") }
        model = line.flatMap { $0.split(separator: ":", maxSplits: 1).last }.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        func read(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var found: [Cache] = []
        for index in 0..<16 {
            let dir = "\(cacheDirectory)/index\(index)"
            guard let levelText = read(dir + "/level"), let level = Int(levelText) else { break }
            guard read(dir + "/type") != "Instruction", let size = read(dir + "/size").flatMap(Self.bytes) else { continue }
            found.append(Cache(level: level, bytes: size, sharedBy: read(dir + "/shared_cpu_list").map(Self.cpuCount) ?? 1))
        }
        caches = found.sorted { $0.level < $1.level }
    }

    /// The model and the caches in one line, as an image's record names its CPU.
    public var recordName: String { "\(model) (caches \(cacheSummary))" }

    /// "L1 48 KiB, L2 2048 KiB, L3 266240 KiB shared by 2": the caches as the records name them.
    public var cacheSummary: String {
        caches.isEmpty ? "unknown"
            : caches.map { "L\($0.level) \($0.bytes >> 10) KiB" + ($0.sharedBy > 1 ? " shared by \($0.sharedBy)" : "") }
                .joined(separator: ", ")
    }

    /// Bytes of a sysfs size ("48K", "2048K", "1M", "512").
    static func bytes(_ text: String) -> Int? {
        let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
        if let last = text.last, let unit = units[last] { return Int(text.dropLast()).map { $0 * unit } }
        return Int(text)
    }

    /// How many CPUs a sysfs list names ("0", "0-1", "0,2,4-7").
    static func cpuCount(_ list: String) -> Int {
        list.split(separator: ",").reduce(0) { total, part in
            let ends = part.split(separator: "-").compactMap { Int($0) }
            return total + (ends.count == 2 ? ends[1] - ends[0] + 1 : 1)
        }
    }
}
