// Small helpers of the benchmark: clocks, timing loops, processes, /proc readings, JSON values.
import Digests
import Foundation
import ModelBundles
#if canImport(Glibc)
import Glibc
#endif

/// Monotonic seconds (for durations).
func seconds() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

/// Wall-clock seconds since 1970 (comparable with the daemon's database timestamps).
func wallClock() -> Double { Date().timeIntervalSince1970 }

/// Best and median time of `body` after one warm-up call.
func timed(minSeconds: Double, minReps: Int = 3, _ body: () throws -> Void) rethrows -> (best: Double, median: Double) {
    try body()
    var times: [Double] = []
    let start = seconds()
    while times.count < minReps || seconds() - start < minSeconds {
        let t0 = seconds()
        try body()
        times.append(seconds() - t0)
    }
    times.sort()
    return (times[0], times[times.count / 2])
}

/// The median of interleaved rounds by `rate` (the upper one of an even count), and every round's
/// rate in ascending order: what each benchmark row reports as its value and its spread.
func medianRound<T>(_ rounds: [T], by rate: (T) -> Double) -> (median: T, rates: [Double]) {
    let sorted = rounds.sorted { rate($0) < rate($1) }
    return (sorted[sorted.count / 2], sorted.map(rate))
}

/// Prints a line at once (the benchmark's output is piped through tee).
func log(_ line: String) {
    print(line)
    fflush(nil)
}

/// Runs a program to its end and returns its exit status and standard output (standard error is
/// appended to `stderrPath` when given, else dropped).
@discardableResult
func runProgram(_ path: String, _ arguments: [String], environment: [String: String]? = nil,
                stderrPath: String? = nil) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    if let environment { p.environment = environment }
    let pipe = Pipe()
    p.standardOutput = pipe
    if let stderrPath {
        if !FileManager.default.fileExists(atPath: stderrPath) { _ = FileManager.default.createFile(atPath: stderrPath, contents: nil) }
        let h = FileHandle(forWritingAtPath: stderrPath)
        h?.seekToEndOfFile()
        p.standardError = h
    } else {
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
    }
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The first line of a program's output, or nil when it cannot run.
func programLine(_ path: String, _ arguments: [String]) -> String? {
    guard FileManager.default.isExecutableFile(atPath: path),
          let r = try? runProgram(path, arguments), r.status == 0 else { return nil }
    return r.output.split(separator: "\n").first.map { String($0).trimmingCharacters(in: .whitespaces) }
}

/// Finds an executable on $PATH.
func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// Memory figures of a process from /proc/PID/status, in KiB.
struct ProcessMemory {
    /// Resident set size now.
    var rssKiB: Int
    /// Peak resident set size since the process started (VmHWM).
    var peakKiB: Int

    static func read(pid: Int32) -> ProcessMemory? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        func field(_ name: String) -> Int? {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return nil }
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        guard let rss = field("VmRSS"), let hwm = field("VmHWM") else { return nil }
        return ProcessMemory(rssKiB: rss, peakKiB: hwm)
    }
}

/// Any JSON value, for embedding the engine's and the daemon's own JSON records (job specs,
/// sampling configurations) in the results as objects rather than strings.
enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        if let c = try? decoder.container(keyedBy: Key.self) {
            var o: [String: JSONValue] = [:]
            for k in c.allKeys { o[k.stringValue] = try c.decode(JSONValue.self, forKey: k) }
            self = .object(o)
        } else if var c = try? decoder.unkeyedContainer() {
            var a: [JSONValue] = []
            while !c.isAtEnd { a.append(try c.decode(JSONValue.self)) }
            self = .array(a)
        } else {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() { self = .null }
            else if let b = try? c.decode(Bool.self) { self = .bool(b) }
            else if let d = try? c.decode(Double.self) { self = .number(d) }
            else { self = .string(try c.decode(String.self)) }
        }
    }

    func encode(to encoder: any Encoder) throws {
        switch self {
        case .null: var c = encoder.singleValueContainer(); try c.encodeNil()
        case .bool(let b): var c = encoder.singleValueContainer(); try c.encode(b)
        case .number(let d): var c = encoder.singleValueContainer(); try c.encode(d)
        case .string(let s): var c = encoder.singleValueContainer(); try c.encode(s)
        case .array(let a): var c = encoder.unkeyedContainer(); for v in a { try c.encode(v) }
        case .object(let o):
            var c = encoder.container(keyedBy: Key.self)
            for (k, v) in o { try c.encode(v, forKey: Key(stringValue: k)) }
        }
    }

    /// Parses JSON text (nil when it is not JSON).
    static func parse(_ text: String) -> JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) }

    /// Any Encodable value as JSON (through its own Codable keys).
    static func of<T: Encodable>(_ value: T) -> JSONValue? {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return (try? enc.encode(value)).flatMap { try? JSONDecoder().decode(JSONValue.self, from: $0) }
    }
}

/// Lowercase hex SHA-256 of a string's UTF-8 bytes.
func sha256Hex(_ text: String) -> String {
    SHA256Hex.of(Data(text.utf8))
}

/// Formats seconds for the console.
func formatSeconds(_ s: Double) -> String {
    s >= 120 ? String(format: "%.1f min", s / 60) : String(format: "%.1f s", s)
}
