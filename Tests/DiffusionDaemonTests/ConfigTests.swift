import DiffusionDaemon
import Testing

@Suite struct ConfigTests {
    func parse(_ text: String) throws(ValidationFailure) -> DaemonConfig {
        try DaemonConfig.parse(Array(text.utf8), baseDirectory: "/srv/d")
    }

    @Test func defaultsAndRelativePaths() throws {
        let c = try parse("spool: spool\noutput: /data/out\nbatch_size: 8\nlimits: {steps: 500}\npreload: [fashion-mnist]\n")
        #expect(c.spool == "/srv/d/spool" && c.output == "/data/out")
        #expect(c.batchSize == 8 && c.limits.steps == 500 && c.limits.imagesPerJob == 10_000 && c.limits.attempts == 3)
        #expect(c.preload == ["fashion-mnist"] && c.threads == 2 && c.logLevel == "info" && c.generator == "engine")
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
}
