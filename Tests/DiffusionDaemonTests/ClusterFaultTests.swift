import DaemonTestSupport
import DiffusionDaemon
import Digests
import Foundation
import ImageCodecs
import Provenance
import ProvenancePostgres
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Real parts, real faults: three `diffusiond` workers, each on a host of its own (a network
/// namespace), share a PostgreSQL server on a fourth over TCP, and one output folder. A job is cut
/// into shards of 8 images; leases last 3 s, renewed every 0.5 s. After each fault every image is
/// recorded exactly once, its row, its file and its SHA-256 agree, its pixels are those of a
/// one-worker run, and no row was recorded under a lease after that lease was taken over.
@Suite(.serialized, .enabled(if: ClusterLab.shared != nil, ClusterLab.skipReason))
struct ClusterFaultTests {
    static let images = 48

    static func job(_ name: String) -> String {
        """
        name: \(name)
        classes: [Trouser, 0, Pullover]
        images_per_class: \(images / 3)
        sampler: {kind: ddim, steps: 10}
        seed: 4242
        """
    }

    /// The pixels the generator defines for image `index` of `job(_:)` (what one worker writes).
    static func referencePixels(_ index: Int) -> String {
        let classIndex = [1, 0, 2][index / (images / 3)]
        let image = DeterministicTestGenerator.image(seed: 4242, index: index, classIndex: classIndex, width: 28, height: 28, channels: 1)
        return SHA256Hex.of(image.pixels)
    }

    @Test func aJobSplitAcrossThreeWorkersIsBitIdenticalToOneWorkersRun() throws {
        let cluster = try Cluster(delayMs: 60)
        try cluster.start(1)
        try cluster.drop(into: 1, "solo.yml", Self.job("solo"))
        let solo = try cluster.waitForDone("solo")
        try cluster.start(2)
        try cluster.start(3)
        try cluster.drop(into: 2, "trio.yml", Self.job("trio"))
        let trio = try cluster.waitForDone("trio")
        let soloPixels = try verifyExactlyOnce(cluster, solo)
        let trioPixels = try verifyExactlyOnce(cluster, trio)
        #expect(soloPixels == trioPixels, "the three workers' images are the one worker's, pixel for pixel")
        #expect(Set(try cluster.store().images(jobID: solo.id).compactMap(\.worker)) == ["w1"])
        #expect(Set(try cluster.store().images(jobID: trio.id).compactMap(\.worker)).count >= 2, "the job ran on several workers")
        #expect(try cluster.store().shards(jobID: trio.id).count == Self.images / Cluster.shardImages)
        // The file dropped on host 2 ends in host 2's spool/done, whichever worker ended the job.
        try cluster.waitFor("trio.yml in w2's spool/done", timeout: 30) {
            FileManager.default.fileExists(atPath: cluster.root + "/w2/spool/done/trio.yml")
        }
        let workers = try cluster.store().workers()
        #expect(workers.map(\.worker) == ["w1", "w2", "w3"])
        #expect(workers.map(\.pid) == (1 ... 3).map { Int(cluster.processes[$0]!.processIdentifier) })
        // Submitted from a machine that only reaches the database: straight into the store, validated as a spooled job.
        let url = cluster.lab.server.url(database: cluster.database, host: NetworkLab.databaseAddressForTests)
        let file = cluster.root + "/remote.yml"
        try Self.job("remote").write(toFile: file, atomically: true, encoding: .utf8)
        let submitted = try cluster.ctl(on: nil, ["submit", "--store", url, "--store-password-file", cluster.root + "/store-password",
                                                  "--config", cluster.root + "/w1.yml", file])
        #expect(submitted.status == 0 && submitted.output.hasPrefix("submitted \(file) as job "), "\(submitted)")
        _ = try verifyExactlyOnce(cluster, try cluster.waitForDone("remote"))
        try "name: bad\nclasses: [Nope]\n".write(toFile: file, atomically: true, encoding: .utf8)
        let rejected = try cluster.ctl(on: nil, ["submit", "--store", url, "--store-password-file", cluster.root + "/store-password",
                                                 "--config", cluster.root + "/w1.yml", file])
        #expect(rejected.status == 65 && rejected.error.contains("rejected"), "\(rejected)")
        #expect(try cluster.store().jobs(states: nil, limit: 100).allSatisfy { $0.name != "bad" })
    }

    @Test func aWorkerKilledMidShardIsResumedByAnotherFromItsFirstUnrecordedImage() throws {
        let cluster = try Cluster()
        for k in 1 ... 3 { try cluster.start(k) }
        try cluster.drop(into: 3, "killed.yml", Self.job("killed"))
        let (victim, shard) = try cluster.waitForWorkerMidShard(job: "killed")
        cluster.signal(victim, SIGKILL)
        let before = try cluster.store().recordedIndices(jobID: shard.jobID)
        // diffusionctl status on any host (the job waits for the dead worker's lease): every worker, and the job over its shards.
        let status = try cluster.ctl(on: 1, ["status", "--config", cluster.root + "/w1.yml"])
        #expect(status.output.contains("workers: 3") && status.output.contains("jobs running:"), "\(status)")
        for k in 1 ... 3 { #expect(status.output.contains("  w\(k)  "), "\(status.output)") }
        #expect(status.output.contains("\(shard.jobID)  killed  ") && status.output.contains("/48 images  shards "), "\(status.output)")
        let json = try cluster.ctl(on: 2, ["status", "--json", "--config", cluster.root + "/w2.yml"])
        let report = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        let jobs = report?["jobs"] as? [[String: Any]] ?? []
        #expect(jobs.contains { $0["id"] as? Int == Int(shard.jobID) && $0["shards_total"] as? Int == 6 && $0["images_total"] as? Int == 48 },
                "\(json.output)")
        #expect((report?["workers"] as? [[String: Any]])?.compactMap { $0["worker"] as? String } == ["w1", "w2", "w3"])
        let takeover = try cluster.waitForTakeover(of: shard)
        #expect(takeover.worker != "w\(victim)")
        let job = try cluster.waitForDone("killed")
        _ = try verifyExactlyOnce(cluster, job)
        // The images the victim had recorded stay its own: the new holder resumed after them.
        let rows = try cluster.store().images(jobID: job.id).filter { (shard.firstIndex ..< shard.endIndex).contains($0.index) }
        for row in rows where before.contains(row.index) { #expect(row.worker == "w\(victim)" && row.leaseToken == shard.token) }
        #expect(rows.contains { $0.leaseToken == takeover.token && $0.worker == takeover.worker })
    }

    @Test func aWorkerFrozenPastItsLeaseIsFencedWhenItWakes() throws {
        let cluster = try Cluster()
        for k in 1 ... 3 { try cluster.start(k) }
        try cluster.drop(into: 1, "frozen.yml", Self.job("frozen"))
        let (victim, shard) = try cluster.waitForWorkerMidShard(job: "frozen")
        cluster.signal(victim, SIGSTOP)
        usleep(300_000) // a row already on its way to the server lands first
        let frozenRows = try recordedUnder(cluster, shard)
        let takeover = try cluster.waitForTakeover(of: shard)
        // Awake while the new holder writes the rest of its shard: the two race for the same images.
        cluster.signal(victim, SIGCONT)
        let job = try cluster.waitForDone("frozen")
        try cluster.waitFor("w\(victim) to see its lease is gone", timeout: 60) {
            let log = cluster.log(victim)
            return log.contains("lease lost") || log.contains("lease renewal refused")
        }
        _ = try verifyExactlyOnce(cluster, job)
        let afterRows = try recordedUnder(cluster, shard)
        #expect(afterRows == frozenRows, "nothing recorded under the frozen worker's lease after it froze: \(frozenRows) then \(afterRows)")
        #expect(takeover.worker != "w\(victim)")
        // Awake again, it is a worker like the others.
        try cluster.drop(into: victim, "after.yml", Self.job("after"))
        _ = try verifyExactlyOnce(cluster, try cluster.waitForDone("after"))
    }

    @Test func aWorkerCutOffFromTheDatabaseLosesItsShardAndRecordsNothingWhenItsLinkReturns() throws {
        let cluster = try Cluster()
        for k in 1 ... 3 { try cluster.start(k) }
        try cluster.drop(into: 2, "cut.yml", Self.job("cut"))
        let (victim, shard) = try cluster.waitForWorkerMidShard(job: "cut")
        try cluster.lab.lab.setLink(worker: victim, up: false)
        defer { try? cluster.lab.lab.setLink(worker: victim, up: true) }
        let takeover = try cluster.waitForTakeover(of: shard)
        let cutRows = try recordedUnder(cluster, shard)
        // Back while the new holder writes the rest of its shard.
        try cluster.lab.lab.setLink(worker: victim, up: true)
        let job = try cluster.waitForDone("cut")
        try cluster.waitFor("w\(victim) to see its lease is gone", timeout: 90) {
            let log = cluster.log(victim)
            return log.contains("lease lost") || log.contains("lease renewal refused")
        }
        _ = try verifyExactlyOnce(cluster, job)
        let afterRows = try recordedUnder(cluster, shard)
        #expect(afterRows == cutRows, "nothing recorded under the cut-off worker's lease after its takeover: \(cutRows) then \(afterRows)")
        #expect(takeover.worker != "w\(victim)")
    }

    @Test func restartingPostgreSQLMidJobLosesNoImageAndDuplicatesNone() throws {
        let cluster = try Cluster()
        for k in 1 ... 3 { try cluster.start(k) }
        try cluster.drop(into: 1, "restart.yml", Self.job("restart"))
        _ = try cluster.waitForWorkerMidShard(job: "restart")
        try cluster.lab.server.restart()
        let job = try cluster.waitForDone("restart")
        _ = try verifyExactlyOnce(cluster, job)
        #expect((1 ... 3).contains { cluster.log($0).contains("store unreachable") || cluster.log($0).contains("reconnecting") },
                "a worker noticed the restart")
    }
}

/// The rows of `shard` recorded under its lease then (its token and worker; tokens count per shard).
func recordedUnder(_ cluster: Cluster, _ shard: ShardRow) throws -> [Int] {
    try cluster.store().images(jobID: shard.jobID).filter {
        (shard.firstIndex ..< shard.endIndex).contains($0.index) && $0.leaseToken == shard.token && $0.worker == shard.worker
    }.map(\.index)
}

/// Checks every invariant of a done job of `ClusterFaultTests.job`; returns the SHA-256 of each image's pixels by index.
func verifyExactlyOnce(_ cluster: Cluster, _ job: JobRow, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
    let store = try cluster.store()
    let rows = try store.images(jobID: job.id)
    let total = ClusterFaultTests.images
    #expect(rows.map(\.index) == Array(0 ..< total), "every image recorded once", sourceLocation: sourceLocation)
    let dir = cluster.root + "/out/\(job.id)-\(job.name)"
    let names = try FileManager.default.contentsOfDirectory(atPath: dir)
    #expect(names.filter { $0.hasPrefix(job.name + "-") }.sorted() == (0 ..< total).map { String(format: "\(job.name)-%05d.png", $0) },
            "one file per image", sourceLocation: sourceLocation)
    #expect(!names.contains { $0.hasPrefix(".") }, "no temporaries left: \(names.filter { $0.hasPrefix(".") })", sourceLocation: sourceLocation)
    let shards = try store.shards(jobID: job.id)
    let leases = try store.leases(jobID: job.id)
    var pixels: [String] = []
    for row in rows {
        let bytes = try FileBytes.read(path: row.path)
        #expect(SHA256Hex.of(bytes) == row.sha256 && bytes.count == row.byteSize, "image \(row.index): file = row", sourceLocation: sourceLocation)
        let decoded = try ImageFile.decode(bytes)
        #expect(decoded.record.json == row.record, "image \(row.index): embedded record = row", sourceLocation: sourceLocation)
        pixels.append(SHA256Hex.of(decoded.image.pixels))
        #expect(pixels.last == ClusterFaultTests.referencePixels(row.index), "image \(row.index): the generator's pixels",
                sourceLocation: sourceLocation)
        // Fencing: recorded under a lease that existed, by its holder, before any later lease of its shard.
        guard let shard = shards.first(where: { ($0.firstIndex ..< $0.endIndex).contains(row.index) }) else {
            Issue.record("image \(row.index) in no shard", sourceLocation: sourceLocation)
            continue
        }
        #expect(leases.contains { $0.shard == shard.shard && $0.token == row.leaseToken && $0.worker == row.worker },
                "image \(row.index) recorded by the holder of its lease", sourceLocation: sourceLocation)
        if let token = row.leaseToken, let next = leases.first(where: { $0.shard == shard.shard && $0.token > token }) {
            #expect(row.committedAt < next.claimedAt, "image \(row.index) recorded by a fenced worker (token \(token))",
                    sourceLocation: sourceLocation)
        }
    }
    #expect(shards.allSatisfy { $0.state == .done }, sourceLocation: sourceLocation)
    // The job's metrics ran once, on the worker that ended its last shard.
    let measured = (1 ... Cluster.workerCount).map { k in
        cluster.log(k).split(separator: "\n").filter {
            ($0.contains("job measured") || $0.contains("job metrics unavailable")) && $0.contains("job=\(job.id) ")
        }.count
    }
    #expect(measured.reduce(0, +) == 1, "metrics once per job: \(measured)", sourceLocation: sourceLocation)
    return pixels
}
