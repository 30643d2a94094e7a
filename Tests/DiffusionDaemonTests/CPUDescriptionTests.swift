import DiffusionDaemon
import Foundation
import Testing

/// The CPU model and caches the environment records name, against glibc's own reading (getconf,
/// from CPUID) and against a sysfs folder written here.
@Suite struct CPUDescriptionTests {
    /// `getconf NAME` as an integer (nil where glibc does not know it).
    static func getconf(_ name: String) throws -> Int? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/getconf")
        p.arguments = [name]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test func cachesAgreeWithGetconf() throws {
        let caches = CPUDescription.current.caches
        var compared = 0
        for (level, name) in [(1, "LEVEL1_DCACHE_SIZE"), (2, "LEVEL2_CACHE_SIZE"), (3, "LEVEL3_CACHE_SIZE")] {
            guard let bytes = try Self.getconf(name), bytes > 0 else { continue }
            #expect(caches.first { $0.level == level }?.bytes == bytes, "L\(level)")
            compared += 1
        }
        #expect(compared >= 2, "getconf reported fewer than two cache levels")
    }

    @Test func modelIsCpuinfosModelName() throws {
        let text = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("model name") })
        #expect(line.hasSuffix(CPUDescription.current.model))
        #expect(!CPUDescription.current.model.isEmpty && CPUDescription.current.model != "unknown")
    }

    @Test func readsASysfsCacheFolder() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("cpu-cache-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let entries: [(String, String, String, String)] = [("1", "Data", "32K", "0-1"), ("1", "Instruction", "64K", "0-1"),
                                                           ("2", "Unified", "1M", "0"), ("3", "Unified", "32768K", "0,2,4-7")]
        for (i, (level, type, size, shared)) in entries.enumerated() {
            let index = "\(dir)/index\(i)"
            try FileManager.default.createDirectory(atPath: index, withIntermediateDirectories: true)
            for (file, value) in [("level", level), ("type", type), ("size", size), ("shared_cpu_list", shared)] {
                try (value + "\n").write(toFile: "\(index)/\(file)", atomically: true, encoding: .utf8)
            }
        }
        let d = CPUDescription(cpuinfo: "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t: fpu\n", cacheDirectory: dir)
        #expect(d.model == "Test CPU 9000")
        #expect(d.caches == [.init(level: 1, bytes: 32 << 10, sharedBy: 2), .init(level: 2, bytes: 1 << 20, sharedBy: 1),
                             .init(level: 3, bytes: 32 << 20, sharedBy: 6)])
        #expect(d.cacheSummary == "L1 32 KiB shared by 2, L2 1024 KiB, L3 32768 KiB shared by 6")
        let none = CPUDescription(cpuinfo: nil, cacheDirectory: dir + "/missing")
        #expect(none.model == "unknown" && none.caches.isEmpty && none.cacheSummary == "unknown")
    }

    @Test func environmentRecordNamesTheCPU() {
        let engine = EngineImageGenerator(modelsDirectory: packageRoot + "/models", cacheBytes: 1 << 20, threads: 2)
        let details = engine.environment.details
        #expect(details["cpu_model"] == CPUDescription.current.model)
        #expect(details["cpu_caches"] == CPUDescription.current.cacheSummary)
    }
}
