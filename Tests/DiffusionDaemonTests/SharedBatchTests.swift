import Foundation
import ImageCodecs
import Logging
import Provenance
import Testing
@testable import DiffusionDaemon

/// Small jobs that sample alike share one batch (`batch_across_jobs`): each image bit-identical to
/// its job sampled alone, each job ended on its own, queue order kept, and a job that cannot share
/// runs alone after the batch it could not join.
@Suite(.serialized) struct SharedBatchTests {
    static let models = packageRoot + "/Tests/Fixtures/bundles"
    static let validator = JobValidator(catalog: DirectoryModelCatalog(root: models), defaultModel: "tiny-unet-cond")

    /// In queue order: three DDIM jobs with their own seeds, eta and clipping (they share), then a
    /// DDPM job (another chain: it cannot join).
    static let jobs = [
        "name: a\nmodel: tiny-unet-cond\nclasses: [class1, class2]\nimages_per_class: 1\nseed: 11\nsampler: {kind: ddim, steps: 5}\n",
        "name: b\nmodel: tiny-unet-cond\nclasses: [class3]\nimages: 1\nseed: 12\nsampler: {kind: ddim, steps: 5, eta: 0.5}\n",
        "name: c\nmodel: tiny-unet-cond\nclasses: [class0]\nimages: 2\nseed: 13\nsampler: {kind: ddim, steps: 5, clip: false}\n",
        "name: d\nmodel: tiny-unet-cond\nclasses: [class2]\nimages: 1\nseed: 14\nsampler: {kind: ddpm, steps: 5}\n",
    ]

    /// Runs the jobs through a runner on the tiny bundles; returns each job's images (index order)
    /// as decoded from its files, with the `shared_batch` field of their records.
    func run(batchAcrossJobs: Bool) async throws -> [String: [(pixels: [UInt8], sharedBatch: String?)]] {
        let dir = makeTempDir("shared-batch")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (runner, store) = try engineRunner(models: Self.models, dir: dir, jobs: Self.jobs.map { ("\(spec($0)).yml", $0) },
                                               validator: Self.validator) { $0.batchAcrossJobs = batchAcrossJobs }
        #expect(await runner.runAvailableJobs() == Self.jobs.count)
        var out: [String: [(pixels: [UInt8], sharedBatch: String?)]] = [:]
        for job in try store.jobs(limit: 10) {
            #expect(job.state == .done, "job \(job.name): \(job.state) \(job.error ?? "")")
            out[job.name] = try store.images(jobID: job.id).sorted { $0.index < $1.index }.map { row in
                let file = try ImageFile.decode(FileBytes.read(path: row.path))
                let record = try GenerationRecord.parse(try #require(file.record.json))
                return (file.image.pixels, record.fields["shared_batch"])
            }
        }
        return out
    }

    func spec(_ text: String) -> String { String(text.split(separator: "\n")[0].dropFirst("name: ".count)) }

    /// Each job's images sampled alone by the generator, index order.
    func alone() throws -> [String: [[UInt8]]] {
        let cache = ModelCache(root: URL(fileURLWithPath: Self.models, isDirectory: true), budgetBytes: .max)
        var out: [String: [[UInt8]]] = [:]
        for text in Self.jobs {
            let spec = try Self.validator.validate(Array(text.utf8), fileName: "job.yml")
            out[spec.name] = try EngineImageGenerator.sample(job: spec, indices: Array(0 ..< spec.totalImages),
                                                             context: GenerationContext(), cache: cache).map(\.pixels)
        }
        return out
    }

    @Test func jobsThatSampleAlikeShareABatchAndEachImageIsItsJobsAlone() async throws {
        let shared = try await run(batchAcrossJobs: true)
        let reference = try alone()
        for name in ["a", "b", "c", "d"] {
            let images = try #require(shared[name], "job \(name) has no images")
            #expect(images.map(\.pixels) == reference[name], "job \(name)'s pixels differ from the job sampled alone")
        }
        // a, b and c (1, 2, 3 in the queue) were sampled together; d, which cannot share their chain, alone.
        for name in ["a", "b", "c"] {
            #expect(shared[name]!.allSatisfy { $0.sharedBatch == "jobs 1,2,3 (5 images)" }, "\(shared[name]!.map(\.sharedBatch))")
        }
        #expect(shared["d"]!.allSatisfy { $0.sharedBatch == nil })
    }

    @Test func withBatchesAcrossJobsOffEveryJobSamplesAlone() async throws {
        let separate = try await run(batchAcrossJobs: false)
        let reference = try alone()
        for name in ["a", "b", "c", "d"] {
            let images = try #require(separate[name], "job \(name) has no images")
            #expect(images.map(\.pixels) == reference[name])
            #expect(images.allSatisfy { $0.sharedBatch == nil })
        }
    }

    @Test func theConfigKeyTakesABoolean() throws {
        #expect(try DaemonConfig.parse(Array("batch_across_jobs: false\n".utf8)).batchAcrossJobs == false)
        #expect(DaemonConfig().batchAcrossJobs)
        do {
            _ = try DaemonConfig.parse(Array("batch_across_jobs: sometimes\n".utf8))
            Issue.record("batch_across_jobs: sometimes accepted")
        } catch {
            #expect("\(error)".contains("batch_across_jobs"), "\(error)")
        }
    }
}
