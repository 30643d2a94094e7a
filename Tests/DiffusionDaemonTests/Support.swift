import DiffusionDaemon
import Foundation

let fashionClasses = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

let testCatalog = StaticModelCatalog([
    ModelInfo(kind: "unet", name: "fashion-mnist", classes: fashionClasses, nullClass: 10, height: 28, width: 28, channels: 1),
    ModelInfo(kind: "classifier", name: "fashion-mnist-classifier", classes: fashionClasses, height: 28, width: 28, channels: 1,
              diffusionSteps: nil, variance: nil),
    ModelInfo(kind: "unet", name: "uncond", classes: [], height: 8, width: 8, channels: 3, variance: .fixedSmall),
])

let validator = JobValidator(catalog: testCatalog, defaultModel: "fashion-mnist")

func validate(_ text: String, file: String = "job.yml") throws(ValidationFailure) -> JobSpec {
    try validator.validate(Array(text.utf8), fileName: file, drawSeed: { 99 })
}

/// The errors of a job that must fail.
func errors(_ text: String, file: String = "job.yml") -> ValidationFailure? {
    do {
        _ = try validate(text, file: file)
        return nil
    } catch {
        return error
    }
}

/// A log file opened for appending (O_APPEND: several daemons, and restarts, share one log without
/// overwriting each other), for a child process's standard output and error.
func appendingLog(_ path: String) throws -> FileHandle {
    let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw HarnessError("cannot open \(path)") }
    return FileHandle(fileDescriptor: fd, closeOnDealloc: true)
}

func makeTempDir(_ label: String) -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString)").path
    try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

/// The package root (for spool/examples).
let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0 ..< 3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The built `diffusionctl` (beside the test bundle, else the release build's).
let diffusionctlPath: String = {
    let exeDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    return [exeDir + "/diffusionctl", packageRoot + "/.build/release/diffusionctl"].first { FileManager.default.isExecutableFile(atPath: $0) }!
}()

/// Runs the built `diffusionctl` with `arguments`; returns its exit status, standard output and standard error.
func diffusionctl(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
    try runCommand([diffusionctlPath] + arguments)
}

/// Runs `command` (an executable path and its arguments); returns its exit status, standard output and standard error.
func runCommand(_ command: [String]) throws -> (status: Int32, output: String, error: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: command[0])
    p.arguments = Array(command.dropFirst())
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile(), errData = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}
