import DaemonTestSupport
import Foundation
import Provenance
import ProvenancePostgres
import Testing

/// A migrated PostgreSQL store on a fresh database of the test server.
func makePostgresStore() throws -> PostgresJobStore {
    let server = try #require(PostgresTestServer.shared)
    return try PostgresJobStore.openDaemon(url: try PostgresStoreURL.parse(server.url(database: try server.createDatabase())),
                                           password: server.password)
}

/// Every store behaviour on the embedded SQLite store.
@Suite struct SQLiteStoreBehaviourTests {
    @Test(arguments: StoreBehaviour.allCases) func behaves(_ behaviour: StoreBehaviour) throws {
        try behaviour.run(on: try ProvenanceStore.inMemory())
    }
}

/// The same behaviours on PostgreSQL (Debian's postgresql, started by the test).
@Suite(.enabled(if: PostgresTestServer.isAvailable, "PostgreSQL could not be installed or started (see the test log)"))
struct PostgresStoreBehaviourTests {
    @Test(arguments: StoreBehaviour.allCases) func behaves(_ behaviour: StoreBehaviour) throws {
        try behaviour.run(on: try makePostgresStore())
    }
}
