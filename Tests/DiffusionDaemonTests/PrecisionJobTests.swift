import DiffusionEngine
import Foundation
import ImageCodecs
import Logging
import Provenance
import Testing
@testable import DiffusionDaemon

/// `precision` in job files and the config: fp32 by default, bf16 where the CPU has the
/// instructions, refused by name where it has not; a bf16 job's images say so in their records and
/// regenerate from them bit for bit.
/// Whether this CPU has bfloat16 instructions.
private let cpuHasBFloat16 = ComputePrecision.bf16.unsupportedReason(on: .current) == nil

@Suite(.serialized) struct PrecisionJobTests {
    static let models = packageRoot + "/Tests/Fixtures/bundles"

    @Test func jobsNameTheirPrecisionAndTheConfigGivesTheDefault() throws {
        #expect(try validate("images: 1\n").precision == .fp32)
        #expect(try validate("images: 1\nprecision: bf16\n").precision == (cpuHasBFloat16 ? .bf16 : .fp32))
        var bf16Default = validator
        bf16Default.defaultPrecision = .bf16
        #expect(try bf16Default.validate(Array("images: 1\n".utf8), drawSeed: { 1 }).precision == .bf16)
        #expect(try bf16Default.validate(Array("images: 1\nprecision: fp32\n".utf8), drawSeed: { 1 }).precision == .fp32)

        let unknown = try #require(errors("images: 1\nprecision: fp16\n"))
        #expect("\(unknown)" == "precision: must be one of fp32, bf16, got \"fp16\" (line 2)")

        var oldCPU = validator
        oldCPU.cpu = CPUFeatures()
        oldCPU.cpu.avx = true; oldCPU.cpu.avx2 = true; oldCPU.cpu.fma = true
        do {
            _ = try oldCPU.validate(Array("images: 1\nprecision: bf16\n".utf8), drawSeed: { 1 })
            Issue.record("bf16 was accepted on a CPU without bfloat16 instructions")
        } catch {
            #expect("\(error)".hasPrefix("precision: precision bf16 needs a CPU with AMX-BF16 or AVX512-BF16 (flags amx_bf16 or avx512_bf16); this one has neither (avx avx2 fma)"),
                    "\(error)")
        }
        #expect(try oldCPU.validate(Array("images: 1\n".utf8), drawSeed: { 1 }).precision == .fp32)
    }

    @Test func configKeyIsCheckedByName() throws {
        #expect(try DaemonConfig.parse(Array("threads: 1\n".utf8)).precision == .fp32)
        if cpuHasBFloat16 { #expect(try DaemonConfig.parse(Array("precision: bf16\n".utf8)).precision == .bf16) }
        do {
            _ = try DaemonConfig.parse(Array("precision: half\n".utf8))
            Issue.record("precision: half was accepted")
        } catch {
            #expect("\(error)" == "precision: must be one of fp32, bf16, got \"half\" (line 1)")
        }
    }

    @Test func specsStoredBeforePrecisionReadAsFloat32() throws {
        let spec = try validate("images: 2\nprecision: bf16\n")
        var object = try #require(try JSONSerialization.jsonObject(with: Data(spec.jsonString().utf8)) as? [String: Any])
        #expect(object["precision"] as? String == spec.precision.rawValue)
        object.removeValue(forKey: "precision")
        let old = try JobSpec.fromJSON(String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self))
        #expect(old.precision == .fp32)
        var expected = spec
        expected.precision = .fp32
        #expect(old == expected)
    }

    /// The same job in fp32 and bf16 through a runner on the tiny bundles (the real engine).
    @Test(.enabled(if: cpuHasBFloat16, "the CPU has neither AVX512-BF16 nor AMX-BF16"))
    func bf16JobsRecordTheirPrecisionAndRegenerateFromTheirRecords() async throws {
        let dir = makeTempDir("precision")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tiny = JobValidator(catalog: DirectoryModelCatalog(root: Self.models), defaultModel: "tiny-unet-cond")
        let jobs = ["fp32", "bf16"].map { precision in
            ("\(precision).yml", "name: \(precision)\nclasses: [class1, class2]\nimages_per_class: 2\nseed: 5\nsampler: {kind: ddim, steps: 5}\nprecision: \(precision)\n")
        }
        // Shared batches are on (the default): the two jobs differ only in precision, so they must not share.
        let (runner, store) = try engineRunner(models: Self.models, dir: dir, jobs: jobs, validator: tiny)
        #expect(await runner.runAvailableJobs() == 2)
        var pixels: [String: [[UInt8]]] = [:]
        var bf16Paths: [String] = []
        for job in try store.jobs(limit: 10) {
            #expect(job.state == .done, "job \(job.name): \(job.state) \(job.error ?? "")")
            for row in try store.images(jobID: job.id).sorted(by: { $0.index < $1.index }) {
                let file = try ImageFile.decode(FileBytes.read(path: row.path))
                let record = try GenerationRecord.parse(try #require(file.record.json))
                #expect(record.spec.precision.rawValue == job.name)
                #expect(record.software.precision == record.spec.precision.recordName)
                #expect(record.fields["shared_batch"] == nil, "an fp32 and a bf16 job shared a batch")
                pixels[job.name, default: []].append(file.image.pixels)
                if job.name == "bf16" { bf16Paths.append(row.path) }
            }
        }
        let fp32 = try #require(pixels["fp32"]), bf16 = try #require(pixels["bf16"])
        #expect(fp32.count == 4 && bf16.count == 4)
        let differing = zip(fp32.joined(), bf16.joined()).filter { $0 != $1 }.count
        #expect(differing > 0, "bf16 images equal the fp32 ones: the bf16 kernels did not run")
        #expect(differing < fp32.joined().count / 2, "bf16 images are far from fp32 ones: \(differing) samples differ")
        for path in bf16Paths {
            let report = try RegenerationReport.build(path: path, modelsDirectory: Self.models, threads: 1)
            #expect(report.identical, "\(report.render())")
        }
        try regenerationNamesTheCPU(of: try #require(bf16Paths.first))
    }

    /// The record names this CPU; an image whose record names another CPU and whose pixels differ
    /// is reported with both CPUs, and one from this CPU that differs is not blamed on the CPU.
    func regenerationNamesTheCPU(of path: String) throws {
        let file = try ImageFile.read(path: path)
        let record = try GenerationRecord.parse(try #require(file.record.json))
        #expect(record.software.cpu == CPUDescription.current.recordName)
        var image = file.image
        image.pixels[0] ^= 1
        for cpu in ["Other CPU (caches L1 32 KiB, L2 1024 KiB)", CPUDescription.current.recordName] {
            var altered = record
            altered.software.cpu = cpu
            let copy = path + ".altered.png"
            defer { try? FileManager.default.removeItem(atPath: copy) }
            let bytes = try ImageFile.encode(image, format: .png, record: EmbeddedRecord(json: altered.jsonString(), parameters: nil))
            try Data(bytes).write(to: URL(fileURLWithPath: copy))
            let report = try RegenerationReport.build(path: copy, modelsDirectory: Self.models, threads: 1)
            #expect(!report.identical && report.differingSamples == 1)
            #expect(report.recordedCPU == cpu && report.currentCPU == CPUDescription.current.recordName)
            let blamesCPU = report.render().contains("made on another CPU (\(cpu))")
            #expect(blamesCPU == (cpu != CPUDescription.current.recordName), "\(report.render())")
            #expect(report.recordedWinograd == EngineImageGenerator.winogradKernel && !report.render().contains("Winograd"))
        }
        // A record from before the engine had its own Winograd kernel names none: the note says so.
        var older = record
        older.software.kernelVersions["winograd"] = nil
        let copy = path + ".older.png"
        defer { try? FileManager.default.removeItem(atPath: copy) }
        try Data(try ImageFile.encode(image, format: .png, record: EmbeddedRecord(json: older.jsonString(), parameters: nil)))
            .write(to: URL(fileURLWithPath: copy))
        let report = try RegenerationReport.build(path: copy, modelsDirectory: Self.models, threads: 1)
        #expect(report.recordedWinograd == nil)
        #expect(report.render().contains("another Winograd convolution kernel (oneDNN's: the record names none); this engine runs \(EngineImageGenerator.winogradKernel)"),
                "\(report.render())")
    }
}
