import Digests
import Foundation
import ImageCodecs
import Logging
import Provenance
import Testing
@testable import DiffusionDaemon

/// How a worker places an image file in a folder other workers write too: under its lease only,
/// never replacing an equal image another worker put there, and replacing anything else.
@Suite struct ShardWritingTests {
    struct Setup {
        let store: ProvenanceStore
        let claim: ShardClaim
        let spec: JobSpec
        let dir: String
        let lease = LeaseKeeper()

        init() throws {
            store = try ProvenanceStore.inMemory()
            spec = try validate("name: placed\nclasses: [Trouser]\nimages: 4\nseed: 5\n")
            _ = try store.insertJob(NewJob(name: spec.name, spoolName: "s--placed.yml", sourceName: "placed.yml", content: [1],
                                           spec: spec.jsonString(), totalImages: spec.totalImages))
            guard case let .claimed(c)? = try store.claimNextShard(ShardRequest(worker: "w1", maxAttempts: 3, environmentID: nil,
                                                                                shardImages: 4, leaseSeconds: 30)) else {
                throw HarnessError("no claim")
            }
            claim = c
            dir = makeTempDir("placed")
            lease.start(c, sent: .now, leaseSeconds: 30)
        }

        func writer(host: String) -> ImageWriter {
            ImageWriter(store: store, generator: DeterministicTestGenerator(), host: host, logger: Logger(label: "test"))
        }

        func image(_ index: Int) -> GeneratedImage {
            DeterministicTestGenerator.image(seed: 5, index: index, classIndex: 1, width: 28, height: 28, channels: 1)
        }

        func path(_ index: Int) -> String { dir + "/" + ImageWriter.fileName(spec: spec, index: index) }

        let models = JobModels(unet: .init(name: "fm", hash: "abc"), classifier: nil)
    }

    @Test func anImageIsRecordedUnderTheWorkersLease() throws {
        let s = try Setup()
        try s.writer(host: "a").write(image: s.image(0), claim: s.claim, spec: s.spec, models: s.models, directory: s.dir, threads: 1, lease: s.lease)
        let row = try #require(try s.store.image(jobID: s.claim.job.id, index: 0))
        #expect(row.worker == "w1" && row.leaseToken == s.claim.lease.token)
        #expect(SHA256Hex.of(try FileBytes.read(path: s.path(0))) == row.sha256)
    }

    @Test func anEqualImageAnotherWorkerPlacedIsKeptAndRecordedAsItIs() throws {
        let s = try Setup()
        // Another worker (its lease since taken over) placed image 1 and died before its row.
        let theirs = try s.writer(host: "other-host").encodedForTest(image: s.image(1), claim: s.claim, spec: s.spec, models: s.models)
        try AtomicFile.write(theirs, to: s.path(1))
        try s.writer(host: "a").write(image: s.image(1), claim: s.claim, spec: s.spec, models: s.models, directory: s.dir, threads: 1, lease: s.lease)
        let row = try #require(try s.store.image(jobID: s.claim.job.id, index: 1))
        #expect(try FileBytes.read(path: s.path(1)) == theirs, "the file in place was not replaced")
        #expect(row.sha256 == SHA256Hex.of(theirs) && row.byteSize == theirs.count)
        let embedded = try ImageFile.decode(theirs).record.json
        #expect(row.record == embedded, "the row carries the record of the file it names")
        #expect(try GenerationRecord.parse(row.record).software.host == "other-host")
    }

    @Test func aFileThatIsNotThisImageIsReplaced() throws {
        let s = try Setup()
        try AtomicFile.write(Array("not an image".utf8), to: s.path(2))
        try s.writer(host: "a").write(image: s.image(2), claim: s.claim, spec: s.spec, models: s.models, directory: s.dir, threads: 1, lease: s.lease)
        let row = try #require(try s.store.image(jobID: s.claim.job.id, index: 2))
        let bytes = try FileBytes.read(path: s.path(2))
        let decoded = try ImageFile.decode(bytes)
        #expect(SHA256Hex.of(bytes) == row.sha256 && decoded.image == s.image(2).raster)
    }

    @Test func aWorkerWhoseLeaseRanOutPlacesNoFileAndRecordsNoRow() throws {
        let s = try Setup()
        s.lease.markLost()
        #expect(throws: LeaseLost.self) {
            try s.writer(host: "a").write(image: s.image(3), claim: s.claim, spec: s.spec, models: s.models, directory: s.dir, threads: 1,
                                          lease: s.lease)
        }
        #expect(!FileManager.default.fileExists(atPath: s.path(3)))
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.dir).isEmpty, "no temporary left either")
        #expect(try s.store.imageCount(jobID: s.claim.job.id) == 0)
    }

    @Test func reconcilingAClaimTouchesOnlyItsOwnImages() throws {
        let s = try Setup()
        let other = s.dir + "/" + ImageWriter.fileName(spec: s.spec, index: 7)
        for name in [".placed-00001.png.tmp-1-1", ".placed-00007.png.tmp-1-2"] {
            _ = FileManager.default.createFile(atPath: s.dir + "/" + name, contents: Data([1]))
        }
        _ = FileManager.default.createFile(atPath: other, contents: Data([2]))
        let (removed, rows) = try s.writer(host: "a").reconcile(claim: s.claim, spec: s.spec, directory: s.dir)
        #expect(removed == [".placed-00001.png.tmp-1-1"] && rows.isEmpty)
        #expect(FileManager.default.fileExists(atPath: s.dir + "/.placed-00007.png.tmp-1-2"), "another shard's temporary stays")
        #expect(FileManager.default.fileExists(atPath: other))
    }
}

extension ImageWriter {
    /// The bytes `write` places for `image` when this writer's host writes it (in a scratch store and
    /// folder of its own, whose job has the same id and file as `claim`'s), for tests.
    func encodedForTest(image: GeneratedImage, claim: ShardClaim, spec: JobSpec, models: JobModels) throws -> [UInt8] {
        let dir = makeTempDir("encoded")
        let scratch = try ProvenanceStore.inMemory()
        let job = try scratch.insertJob(NewJob(name: claim.job.name, spoolName: claim.job.spoolName, sourceName: claim.job.sourceName,
                                               content: [1], spec: claim.job.spec, totalImages: claim.job.totalImages))
        guard job.id == claim.job.id, job.contentSHA256 == claim.job.contentSHA256,
              case let .claimed(mine)? = try scratch.claimNextShard(ShardRequest(worker: "x", maxAttempts: 3, environmentID: nil,
                                                                                 shardImages: 4, leaseSeconds: 30)) else {
            throw HarnessError("the scratch job differs from the claim's")
        }
        let keeper = LeaseKeeper()
        keeper.start(mine, sent: .now, leaseSeconds: 30)
        let w = ImageWriter(store: scratch, generator: generator, host: host, logger: logger)
        try w.write(image: image, claim: mine, spec: spec, models: models, directory: dir, threads: 1, lease: keeper)
        return try FileBytes.read(path: dir + "/" + Self.fileName(spec: spec, index: image.index))
    }
}
