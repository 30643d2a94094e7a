import DiffusionDaemon
import Foundation
import ProvenancePostgres
import Testing

/// The `store` and `store_password_file` keys, and where the password comes from.
@Suite struct StoreConfigTests {
    func parse(_ text: String) throws(ValidationFailure) -> DaemonConfig {
        try DaemonConfig.parse(Array(text.utf8), baseDirectory: "/srv/d")
    }

    @Test func sqliteIsTheDefaultAndAPostgresURLIsParsed() throws {
        #expect(try parse("{}\n").store == .sqlite && parse("store: sqlite\n").store == .sqlite)
        #expect(StoreOpener.describe(try parse("state: st\n")) == "/srv/d/st/diffusiond.sqlite")
        let c = try parse("store: postgresql://diffusiond@db.example:6543/jobs\nstore_password_file: secret/pw\n")
        #expect(c.store == .postgres(PostgresStoreURL(user: "diffusiond", host: "db.example", port: 6543, database: "jobs")))
        #expect(c.storePasswordFile == "/srv/d/secret/pw")
        #expect(StoreOpener.describe(c) == "postgresql://diffusiond@db.example:6543/jobs")
        #expect(try parse("store: postgres://u@h/d\n").store == .postgres(PostgresStoreURL(user: "u", host: "h", port: 5432, database: "d")))
    }

    @Test(arguments: [
        ("store: postgresql://u:hunter2@h:5432/d\n", "must not carry a password"),
        ("store: mysql://u@h/d\n", "must be `sqlite` or postgresql://"),
        ("store: postgresql://h:5432/d\n", "names no user"),
        ("store: postgresql://u@h:5432/\n", "names no database"),
        ("store: postgresql://u@h:5432/d?sslmode=disable\n", "takes no options"),
        ("store: 5\n", "store"),
        ("store_password_file: pw\n", "only a postgresql:// store takes a password"),
    ])
    func badStoresNameTheKey(_ text: String, _ message: String) {
        do {
            _ = try parse(text)
            Issue.record("accepted \(text)")
        } catch {
            let key = text.hasPrefix("store_password_file") ? "store_password_file" : "store"
            #expect(error.errors.contains { $0.path == key }, "\(error)")
            #expect(error.description.contains(message), "\(error)")
            #expect(!error.description.contains("hunter2"), "the password is not repeated: \(error)")
        }
    }

    @Test func thePasswordComesFromTheFileElseTheEnvironment() throws {
        let dir = makeTempDir("store-password")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = try parse("store: postgresql://u@h/d\n")
        #expect(try StoreOpener.password(for: c, environment: [:]) == nil)
        #expect(try StoreOpener.password(for: c, environment: ["DIFFUSIOND_STORE_PASSWORD": "from-env"]) == "from-env")
        try "from-file\nsecond line\n".write(toFile: dir + "/pw", atomically: true, encoding: .utf8)
        c.storePasswordFile = dir + "/pw"
        #expect(try StoreOpener.password(for: c, environment: ["DIFFUSIOND_STORE_PASSWORD": "from-env"]) == "from-file")
        c.storePasswordFile = dir + "/missing"
        do {
            _ = try StoreOpener.password(for: c, environment: [:])
            Issue.record("read a missing password file")
        } catch {
            #expect("\(error)".contains("store_password_file: cannot read \(dir)/missing"))
        }
    }

    @Test func aReloadKeepsTheStore() throws {
        let running = try parse("store: postgresql://u@h/d\n")
        let (applied, needRestart) = running.reloaded(with: try parse("store: sqlite\nbatch_size: 3\n"))
        #expect(applied.store == running.store && applied.batchSize == 3 && needRestart == ["store"])
    }
}
