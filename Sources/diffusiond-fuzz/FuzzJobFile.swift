import DiffusionDaemon
import Foundation

/// The job-file parser and validator under libFuzzer (`make fuzz`: built with
/// `--sanitize fuzzer --sanitize address -Xswiftc -DFUZZING`, seed corpus in
/// Tests/Fuzz/corpus). Without FUZZING it is a replayer: each file named on
/// the command line (or every file in a folder) goes through the same checks.
///
/// A crash, a sanitizer report, a hang, or a broken invariant (a `fatalError`
/// below) is a finding:
/// - a job that validates has a safe name, model and classifier (single path
///   components), counts and steps within the limits, finite numbers, and
///   survives a JSON round trip unchanged;
/// - a rejection carries at least one error, each with a message;
/// - the same bytes give the same result twice;
/// - the daemon config parser survives the same bytes.
enum JobFileFuzz {
    static let classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    static let catalog = StaticModelCatalog([
        ModelInfo(kind: "unet", name: "fashion-mnist", classes: classes, nullClass: 10, height: 28, width: 28, channels: 1),
        ModelInfo(kind: "classifier", name: "fashion-mnist-classifier", classes: classes, height: 28, width: 28, channels: 1,
                  diffusionSteps: nil, variance: nil),
        ModelInfo(kind: "unet", name: "uncond", classes: [], height: 8, width: 8, channels: 3, diffusionSteps: 200, variance: .fixedSmall),
    ])
    static let validator = JobValidator(catalog: catalog, defaultModel: "fashion-mnist")

    static func check(_ bytes: [UInt8]) {
        let first = outcome(bytes)
        let second = outcome(bytes)
        guard first == second else { fatalError("two validations of the same bytes differ:\n\(first)\n\(second)") }
        _ = try? DaemonConfig.parse(bytes, baseDirectory: "/base")
    }

    /// The validated spec's JSON, or the error text.
    static func outcome(_ bytes: [UInt8]) -> String {
        let spec: JobSpec
        do {
            spec = try validator.validate(bytes, fileName: "fuzz.yml", drawSeed: { 42 })
        } catch {
            guard !error.errors.isEmpty, error.errors.allSatisfy({ !$0.message.isEmpty }) else {
                fatalError("a rejection without a message: \(error.errors)")
            }
            return "rejected: " + error.description
        }
        let limits = validator.limits
        for (what, name) in [("name", spec.name), ("model", spec.model), ("classifier", spec.sampler.classifier ?? "ok")] {
            if let problem = SafeName.problem(name) { fatalError("accepted an unsafe \(what) \(name.debugDescription): \(problem)") }
        }
        guard (1 ... limits.imagesPerJob).contains(spec.totalImages) else { fatalError("accepted \(spec.totalImages) images") }
        if let steps = spec.sampler.steps, !(1 ... limits.steps).contains(steps) { fatalError("accepted \(steps) steps") }
        if let l = spec.sampler.langevin, l.levels * l.stepsPerLevel > 10 * limits.steps || !l.stepSize.isFinite {
            fatalError("accepted Langevin settings \(l)")
        }
        for value in [spec.sampler.eta, spec.sampler.guidanceScale] {
            if let v = value, !v.isFinite { fatalError("accepted a non-finite number") }
        }
        if spec.mode.usesClasses && spec.classes.isEmpty { fatalError("a class mode without classes") }
        guard let back = try? JobSpec.fromJSON(spec.jsonString()), back == spec else {
            fatalError("the spec does not survive a JSON round trip: \(spec.jsonString())")
        }
        return "accepted: " + spec.jsonString()
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJobFile(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    JobFileFuzz.check(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
#else
@main
struct Replay {
    static func main() {
        var files: [String] = []
        for arg in CommandLine.arguments.dropFirst() {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: arg, isDirectory: &isDir), isDir.boolValue {
                files += ((try? FileManager.default.contentsOfDirectory(atPath: arg)) ?? []).sorted().map { arg + "/" + $0 }
            } else {
                files.append(arg)
            }
        }
        guard !files.isEmpty else {
            print("usage: diffusiond-fuzz FILE|FOLDER... (replays job files through the fuzz checks; make fuzz builds the fuzzer)")
            return
        }
        var accepted = 0
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            JobFileFuzz.check([UInt8](data))
            if JobFileFuzz.outcome([UInt8](data)).hasPrefix("accepted") { accepted += 1 }
        }
        print("replayed \(files.count) files: \(accepted) accepted, \(files.count - accepted) rejected, no invariant broken")
    }
}
#endif
