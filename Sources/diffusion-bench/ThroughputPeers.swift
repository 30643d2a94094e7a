// The throughput stage's other runtimes: training/bench_torch.py servers (one per Python), each
// preparing its runtimes once (torch.compile compiles at start-up) and timing one
// (runtime, batch) on request, so the stage can interleave them with the engine round after round.
import Foundation

/// A runtime the stage compares the engine with.
struct PeerRuntime: Codable, Hashable {
    /// e.g. "pytorch-2.13.0+cpu-compile", "onnxruntime-1.32.0".
    var id: String
    /// e.g. "PyTorch 2.13.0+cpu torch.compile".
    var label: String
    var precision: String
    var version: String
    /// The server's name for it.
    var serverName: String
}

/// One bench_torch.py process answering timing requests on its standard input.
final class PeerServer {
    let python: String
    private let process = Process()
    private let input = Pipe(), output = Pipe()
    private var buffer = Data()
    private(set) var runtimes: [PeerRuntime] = []
    private(set) var errors: [String: String] = [:]

    /// Starts `python training/bench_torch.py` with `runtimes` (server names) and waits until it has
    /// prepared them; its standard error (warnings, compile progress) goes to `logPath`.
    init(python: String, runtimes names: [String], bundle: String?, architectureJSON: String, batches: [Int], threads: Int,
         logPath: String) throws {
        self.python = python
        process.executableURL = URL(fileURLWithPath: python)
        var args = ["training/bench_torch.py", "--runtimes", names.joined(separator: ","),
                    "--batches", batches.map(String.init).joined(separator: ","), "--threads", String(threads)]
        if let bundle { args += ["--bundle", bundle] } else { args += ["--arch", architectureJSON] }
        process.arguments = args
        process.standardInput = input
        process.standardOutput = output
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
        guard let ready = try readObject(), ready["ready"] as? Bool == true else {
            let lastLine = (try? String(contentsOfFile: logPath, encoding: .utf8))?
                .split(separator: "\n").last { !$0.allSatisfy(\.isWhitespace) }.map { ": \($0)" } ?? ""
            throw BenchError("\(python) training/bench_torch.py did not start (see \(logPath))\(lastLine)")
        }
        let versions = ready["versions"] as? [String: String] ?? [:]
        errors = ready["errors"] as? [String: String] ?? [:]
        let torch = versions["torch"] ?? "?"
        for name in ready["runtimes"] as? [String] ?? [] {
            let bf16 = name.hasSuffix("-bf16")
            if name == "onnxruntime" {
                let v = versions["onnxruntime"] ?? "?"
                runtimes.append(PeerRuntime(id: "onnxruntime-\(v)", label: "ONNX Runtime \(v)", precision: "fp32", version: v, serverName: name))
            } else {
                let mode = name.contains("compile") ? "compile" : "eager"
                runtimes.append(PeerRuntime(id: "pytorch-\(torch)-\(mode)" + (bf16 ? "-bf16" : ""),
                                            label: "PyTorch \(torch) \(mode == "compile" ? "torch.compile" : "eager")" + (bf16 ? " bf16 autocast" : ""),
                                            precision: bf16 ? "bf16" : "fp32", version: torch, serverName: name))
            }
        }
    }

    /// The best and the median call of `runtime` at `batch` over at least `seconds`.
    func time(_ runtime: PeerRuntime, batch: Int, seconds: Double) throws -> (best: Double, median: Double) {
        let request = try JSONSerialization.data(withJSONObject: ["runtime": runtime.serverName, "batch": batch, "seconds": seconds])
        input.fileHandleForWriting.write(request + Data("\n".utf8))
        guard let reply = try readObject(), let best = reply["best_s"] as? Double, let median = reply["median_s"] as? Double else {
            throw BenchError("\(runtime.label) at batch \(batch): no timing from \(python) training/bench_torch.py")
        }
        return (best, median)
    }

    /// Closes the server's input (it exits) and waits for it.
    func stop() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    private func readObject() throws -> [String: Any]? {
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = buffer[buffer.startIndex ..< newline]
                buffer = Data(buffer[(newline + 1)...])
                if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] { return object }
                continue
            }
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return nil }
            buffer.append(chunk)
        }
    }
}
