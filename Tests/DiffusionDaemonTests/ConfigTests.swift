import DiffusionDaemon
import Foundation
import Testing

@Suite struct ConfigTests {
    func parse(_ text: String) throws(ValidationFailure) -> DaemonConfig {
        try DaemonConfig.parse(Array(text.utf8), baseDirectory: "/srv/d")
    }

    @Test func defaultsAndRelativePaths() throws {
        let c = try parse("spool: spool\noutput: /data/out\nbatch_size: 8\nlimits: {steps: 500}\npreload: [fashion-mnist]\n")
        #expect(c.spool == "/srv/d/spool" && c.output == "/data/out")
        #expect(c.batchSize == 8 && c.limits.steps == 500 && c.limits.imagesPerJob == 10_000 && c.limits.attempts == 3)
        #expect(c.preload == ["fashion-mnist"] && c.threads == 2 && c.logLevel == .info && c.generator == .engine)
        #expect(c.databasePath == "/srv/d/state/diffusiond.sqlite" || c.databasePath.hasSuffix("/diffusiond.sqlite"))
        #expect(try parse("{}\n") == DaemonConfig())
    }

    @Test func unknownKeysNameTheKeyAndLine() {
        do {
            _ = try parse("spool: /s\nbatchsize: 3\n")
            Issue.record("accepted")
        } catch {
            #expect(error.errors.first?.path == "batchsize")
            #expect(error.errors.first?.line == 2)
            #expect(error.description.contains("did you mean batch_size"))
        }
        do {
            _ = try parse("limits:\n  steps: 10\n  image_per_job: 3\n")
            Issue.record("accepted")
        } catch {
            #expect(error.errors.first?.path == "limits.image_per_job" && error.errors.first?.line == 3)
        }
    }

    @Test(arguments: [
        ("batch_size: 0\n", "batch_size"), ("threads: two\n", "threads"), ("log_level: loud\n", "log_level"),
        ("limits: {attempts: 0}\n", "limits.attempts"), ("metrics: {enabled: yes}\n", "metrics.enabled"),
        ("default_model: ../m\n", "default_model"), ("preload: fashion\n", "preload"), ("generator: gpu\n", "generator"),
        ("spool: \"\"\n", "spool"), ("cache_memory_mb: .nan\n", "cache_memory_mb"),
    ])
    func badValues(_ text: String, _ field: String) {
        do {
            _ = try parse(text)
            Issue.record("accepted \(text)")
        } catch {
            #expect(error.errors.contains { $0.path == field }, "\(error)")
        }
    }

    @Test func relativePathsFollowTheConfigFileNotTheCurrentDirectory() throws {
        let dir = makeTempDir("config")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/etc", withIntermediateDirectories: true)
        try "spool: spool\noutput: ../out\nstate: ./state\nmodels: /m\n".write(toFile: dir + "/etc/config.yml", atomically: true, encoding: .utf8)
        let c = try DaemonConfig.load(path: dir + "/etc/config.yml")
        #expect(c.spool == dir + "/etc/spool" && c.output == dir + "/out" && c.state == dir + "/etc/state" && c.models == "/m")
        #expect(c.databasePath == dir + "/etc/state/diffusiond.sqlite")
    }

    @Test func theCheckoutConfigIsValid() throws {
        let c = try DaemonConfig.load(path: packageRoot + "/config.yml")
        #expect(c.spool == packageRoot + "/spool" && c.output == packageRoot + "/output")
        #expect(c.state == packageRoot + "/state" && c.models == packageRoot + "/models")
        #expect(c.defaultModel == "fashion-mnist" && c.generator == .engine)
        let installed = try DaemonConfig.load(path: packageRoot + "/systemd/config.yml")
        #expect(installed.spool == "/var/spool/diffusiond" && installed.output == "/var/lib/diffusiond/output")
        #expect(installed.state == "/var/lib/diffusiond/state" && installed.models == "/usr/local/share/diffusiond/models")
        #expect(installed.generator == .engine)
    }

    @Test func defaultConfigPath() {
        let installed = DaemonConfig.installedPath
        #expect(DaemonConfig.defaultPath(environment: ["DIFFUSIOND_CONFIG": "/x/c.yml"], fileExists: { _ in true }) == "/x/c.yml")
        #expect(DaemonConfig.defaultPath(environment: [:], fileExists: { $0 == installed }) == "/etc/diffusiond/config.yml")
        #expect(DaemonConfig.defaultPath(environment: ["DIFFUSIOND_CONFIG": ""], fileExists: { _ in false }) == "config.yml")
    }

    /// SIGHUP applies batch size, limits, metrics and the rescan interval; the folders, threads,
    /// cache size, log level, preload and generator need a restart and keep their running values.
    @Test func reloadKeepsTheKeysThatNeedARestart() throws {
        let running = try DaemonConfig.parse(Array("threads: 2\nbatch_size: 64\nlog_level: info\n".utf8))
        let read = try DaemonConfig.parse(Array("threads: 1\nbatch_size: 8\nlog_level: debug\ncache_memory_mb: 512\npreload: [a]\nrescan_seconds: 5\nlimits: {attempts: 5}\n".utf8))
        let (applied, needRestart) = running.reloaded(with: read)
        #expect(applied.batchSize == 8 && applied.rescanSeconds == 5 && applied.limits.attempts == 5)
        #expect(applied.threads == 2 && applied.logLevel == .info && applied.cacheMemoryMB == running.cacheMemoryMB && applied.preload == [])
        #expect(needRestart == ["threads", "cache_memory_mb", "log_level", "preload"])
        #expect(running.reloaded(with: running).needRestart.isEmpty)
    }
}
