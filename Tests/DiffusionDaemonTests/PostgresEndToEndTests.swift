import DaemonTestSupport
import Foundation
import Provenance
import ProvenancePostgres
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A real `diffusiond` whose store is PostgreSQL, and the real `diffusionctl` reading it there.
@Suite(.serialized, .enabled(if: PostgresTestServer.isAvailable, "PostgreSQL could not be installed or started (see the test log)"))
struct PostgresEndToEndTests {
    @Test func aDaemonOnPostgreSQLRunsAJobThatDiffusionctlReadsFromThere() throws {
        let server = try #require(PostgresTestServer.shared)
        let db = try server.createDatabase()
        let url = server.url(database: db)
        let h = try DaemonHarness(delayMs: 0, extraConfig: "store: \(url)\nstore_password_file: store-password\n")
        try "\(server.password)\n".write(toFile: h.root + "/store-password", atomically: true, encoding: .utf8)
        h.process = try h.launch(config: h.root + "/config.yml")
        let location = try PostgresStoreURL.parse(url)
        try h.waitFor("the store's schema", timeout: 60) {
            (try? PostgresJobStore.openClient(url: location, password: server.password)) != nil
        }
        try h.waitFor("the spool", timeout: 30) { h.exists("spool/incoming") }
        let store = try PostgresJobStore.openClient(url: location, password: server.password)
        try h.waitFor("the heartbeat", timeout: 30) { (try? store.heartbeat()?.pid) == h.pid.map(Int.init) }
        try h.drop("pg.yml", "name: pg\nclasses: [Trouser]\nimages: 3\n")
        try h.waitFor("the job to finish", timeout: 120) { (try? store.jobs(states: [.done], limit: 10).first?.name) == "pg" }
        let job = try #require(try store.jobs(states: [.done], limit: 10).first)
        #expect(try store.images(jobID: job.id).map(\.index) == [0, 1, 2])
        #expect(h.exists("spool/done/pg.yml"))
        #expect(!h.exists("state/diffusiond.sqlite"), "no SQLite database besides the PostgreSQL store")
        #expect(h.log().contains(url) && !h.log().contains(server.password), "the log names the store without its password")

        let config = h.root + "/config.yml"
        let status = try diffusionctl(["status", "--config", config])
        #expect(status.status == 0 && status.output.hasPrefix("diffusiond: running (pid \(h.pid!)"), "\(status)")
        let jobs = try diffusionctl(["jobs", "--config", config])
        #expect(jobs.status == 0 && jobs.output.contains("pg") && jobs.output.contains("done"), "\(jobs)")
        let show = try diffusionctl(["show", String(job.id), "--config", config])
        #expect(show.status == 0 && show.output.hasPrefix("job \(job.id): pg"), "\(show)")
        #expect(show.output.contains("state: done") && show.output.contains("images 3/3"), "\(show)")
        #expect(show.output.contains("pending -> active"), "\(show)")
        #expect(h.signal(SIGTERM) == 0)

        // Without the password, diffusionctl says it cannot connect, naming the store.
        try FileManager.default.removeItem(atPath: h.root + "/store-password")
        let denied = try diffusionctl(["jobs", "--config", config])
        #expect(denied.status != 0 && denied.error.contains("store_password_file: cannot read"), "\(denied)")
    }
}
