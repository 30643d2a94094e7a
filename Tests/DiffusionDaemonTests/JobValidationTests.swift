import DiffusionDaemon
import DiffusionEngine
import Foundation
import Testing

@Suite struct JobValidationTests {
    @Test func shippedExamplesAreValid() throws {
        let dir = packageRoot + "/spool/examples"
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).filter { Spool.jobExtensions.contains(($0 as NSString).pathExtension) }
        #expect(names.count >= 5)
        // Against the shipped bundles themselves (their classes, heads and Gamma tables).
        let shipped = JobValidator(catalog: DirectoryModelCatalog(root: packageRoot + "/models"), defaultModel: "fashion-mnist")
        for name in names {
            let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: dir + "/" + name)))
            do {
                let spec = try shipped.validate(bytes, fileName: name)
                #expect(spec.totalImages > 0, "\(name)")
            } catch {
                Issue.record("\(name): \(error)")
            }
        }
    }

    @Test func defaultsAreSpelledOut() throws {
        let spec = try validate("images_per_class: 2\nclasses: [Trouser, 9]\n", file: "my job.yml")
        #expect(spec.name == "my_job")
        #expect(spec.model == "fashion-mnist")
        #expect(spec.mode == .classConditional)
        #expect(spec.classes == [ClassRef(index: 1, name: "Trouser"), ClassRef(index: 9, name: "Ankle boot")])
        #expect(spec.totalImages == 4)
        #expect(spec.classFor(index: 1)?.index == 1 && spec.classFor(index: 2)?.index == 9)
        #expect(spec.sampler == SamplerSpec(kind: .ddim, steps: 50, respacing: "ddim50", eta: 0, clip: true))
        #expect(spec.seed == 99 && spec.seedDrawn)
        #expect(spec.output == OutputSpec(format: .png, quality: nil, upscale: 1))
        // The spec survives its JSON form.
        #expect(try JobSpec.fromJSON(spec.jsonString()) == spec)
    }

    @Test func jsonJobsAndModes() throws {
        let spec = try validate(#"{"mode": "classifier-free", "images": 5, "sampler": {"kind": "ddpm", "steps": 10}, "seed": 3}"#, file: "x.json")
        #expect(spec.sampler.guidanceScale == 3 && spec.sampler.variance == .learnedRange && spec.sampler.respacing == "10")
        #expect(spec.classes.count == 10 && spec.classFor(index: 4)?.index == 4)
        let u = try validate("model: uncond\nimages: 3\nsampler: analytic-ddim\n")
        #expect(u.mode == .unconditional && u.classes.isEmpty && u.sampler.eta == 0 && u.channels == 3)
        let g = try validate("mode: classifier-guided\nclasses: 3\nimages: 2\n")
        #expect(g.sampler.classifier == "fashion-mnist-classifier" && g.sampler.guidanceScale == 1)
        let l = try validate("sampler: {kind: langevin, langevin: {levels: 10}}\nimages: 1\n")
        #expect(l.sampler.steps == nil && l.sampler.langevin?.levels == 10 && l.sampler.langevin?.stepsPerLevel == 2)
    }

    /// A new job gets the tuned noise range; `sigma_max` / `sigma_min` override it, are recorded, and a
    /// stored spec from before they were recorded reads back with the range it ran with.
    @Test func langevinNoiseRange() throws {
        let tuned = try validate("sampler: {kind: langevin}\nimages: 1\n")
        #expect(tuned.sampler.langevin == LangevinParameters.jobDefaults)
        let set = try validate("sampler: {kind: langevin, langevin: {sigma_max: 20, sigma_min: 0.05}}\nimages: 1\n")
        #expect(set.sampler.langevin?.sigmaMax == 20 && set.sampler.langevin?.sigmaMin == 0.05)
        let json = set.jsonString()
        #expect(json.contains("\"sigma_max\":20") && json.contains("\"sigma_min\":0.05"))
        #expect(try JobSpec.fromJSON(json) == set)
        // The record of a job stored before the range was part of it: no sigma keys.
        let old = json.replacingOccurrences(of: ",\"sigma_max\":20", with: "").replacingOccurrences(of: ",\"sigma_min\":0.05", with: "")
        #expect(!old.contains("sigma_"))
        let legacy = try JobSpec.fromJSON(old).sampler.langevin
        #expect(legacy?.sigmaMax == 1 && legacy?.sigmaMin == 0.01, "an old record keeps the engine's legacy range 1 -> 0.01")
    }

    /// Each class of bad input, and the field its error must name.
    static let badJobs: [(String, String, String)] = [
        ("images: 2\nsampler: {steps: 0}\n", "sampler.steps", "must be between 1 and 1000, got 0"),
        ("images: 2\nsampler: {steps: 1001}\n", "sampler.steps", "between"),
        ("images: 2\nsampler: {kind: ddim, eta: .nan}\n", "sampler.eta", "finite"),
        ("images: 2\nsampler: {kind: ddim, eta: .inf}\n", "sampler.eta", "finite"),
        ("images: 2\nsampler: {kind: ddim, eta: 1e999}\n", "sampler.eta", "finite"),
        ("images: 2\nsampler: {kind: ddim, eta: 1.5}\n", "sampler.eta", "between 0 and 1"),
        ("images: 2\nsampler: {kind: ddpm, eta: 0.5}\n", "sampler.eta", "applies only"),
        ("images: 2\nsampler: {kind: euler}\n", "sampler.kind", "must be one of"),
        ("images: 2\nsampler: {kind: ddim, respacing: ddim999}\n", "sampler.respacing", "integer stride"),
        ("images: 2\nsampler: {kind: ddim, steps: 20, respacing: ddim50}\n", "sampler.respacing", "keeps 50"),
        ("images: 2\nsampler: {kind: ddpm, variance: fuzzy}\n", "sampler.variance", "must be one of"),
        ("images: 2\nsampler: {guidance_scale: 2}\n", "sampler.guidance_scale", "applies only"),
        ("images: 2\nmode: classifier-guided\nsampler: {classifier: nope}\n", "sampler.classifier", "unknown classifier"),
        ("images: 2\nsampler: {stepz: 3}\n", "sampler.stepz", "unknown key"),
        ("images: 2\nmodel: nosuchmodel\n", "model", "unknown model"),
        ("images: 2\nmodel: fashion-mnist-classifier\n", "model", "not a diffusion model"),
        ("images: 2\nmodel: ../../etc\n", "model", "'/'"),
        ("images: 2\nmode: sideways\n", "mode", "must be one of"),
        ("images: 2\nmodel: uncond\nmode: class-conditional\n", "mode", "unconditional"),
        ("images: 2\nclasses: [Trousers, 3]\n", "classes[0]", "unknown class"),
        ("images: 2\nclasses: [12]\n", "classes[0]", "between 0 and 9"),
        ("images: 2\nmode: unconditional\nclasses: [1]\n", "classes", "does not apply"),
        ("images: 0\n", "images", "between 1"),
        ("images: 20000\n", "images", "between 1"),
        ("images_per_class: 5000\n", "images_per_class", "more than the limit"),
        ("images: 2\nimages_per_class: 1\n", "images", "either"),
        ("name: x\n", "images", "missing"),
        ("images: 2.5\n", "images", "expected an integer"),
        ("images: \"3\"\n", "images", "expected an integer"),
        ("images: 2\nname: ../evil\n", "name", "'/'"),
        ("images: 2\nname: /etc/passwd\n", "name", "'/'"),
        ("images: 2\nname: .hidden\n", "name", "start with '.'"),
        ("images: 2\nname: \"a\\tb\"\n", "name", "control"),
        ("images: 2\nname: a b\n", "name", "may contain only"),
        ("images: 2\nseed: -1\n", "seed", "non-negative"),
        ("images: 2\nseed: 18446744073709551616\n", "seed", "below 2^64"),
        ("images: 2\noutput: {format: gif}\n", "output.format", "must be one of"),
        ("images: 2\noutput: {format: png, quality: 90}\n", "output.quality", "only to jpeg"),
        ("images: 2\noutput: {format: jpeg, quality: 101}\n", "output.quality", "between 1 and 100"),
        ("images: 2\noutput: {upscale: 0}\n", "output.upscale", "between 1 and 16"),
        ("images: 2\npriority: 1000\n", "priority", "between"),
        ("images: 2\nsampler: {kind: langevin, steps: 10}\n", "sampler.steps", "does not apply"),
        ("images: 2\nsampler: {kind: langevin, langevin: {step_size: 0}}\n", "sampler.langevin.step_size", "between"),
        ("images: 2\nsampler: {kind: ddim, langevin: {levels: 3}}\n", "sampler.langevin", "applies only"),
        ("images: 2\nsampler: {kind: langevin, langevin: {sigma_max: 0.5, sigma_min: 1}}\n", "sampler.langevin.sigma_min", "above sigma_max"),
        ("images: 2\nsampler: {kind: langevin, langevin: {sigma_max: 0}}\n", "sampler.langevin.sigma_max", "between"),
        ("images: 2\nsampler: {clip: maybe}\n", "sampler.clip", "true or false"),
        ("images: 2\nextra: 1\n", "extra", "unknown key"),
        ("- images: 2\n", "", "expected a mapping"),
        ("images: 2\nimages: 3\n", "", "duplicate"),
        ("images: [2\n", "", "not valid YAML"),
        ("", "", "empty"),
    ]

    @Test(arguments: badJobs.indices) func badInputNamesTheField(_ i: Int) {
        let (text, field, fragment) = Self.badJobs[i]
        guard let failure = errors(text) else {
            Issue.record("accepted: \(text)")
            return
        }
        #expect(failure.errors.contains { $0.path == field && $0.message.contains(fragment) },
                "\(text.debugDescription): \(failure)")
    }

    @Test func errorsCarryLineNumbersAndTheExactMessage() {
        let failure = errors("images: 2\nsampler:\n  kind: ddim\n  steps: 0\n")
        #expect(failure?.description == "sampler.steps: must be between 1 and 1000, got 0 (line 4)")
    }

    @Test func hostileFilesAreRejected() {
        // Invalid UTF-8.
        var bytes = Array("images: 2\nname: ".utf8) + [0xC3, 0x28] + Array("\n".utf8)
        do {
            _ = try validator.validate(bytes, fileName: "a.yml")
            Issue.record("accepted invalid UTF-8")
        } catch {
            #expect(error.description.contains("UTF-8"))
            #expect(error.errors.first?.line == 2)
        }
        // A NUL byte.
        bytes = Array("images: 2\0\n".utf8)
        #expect((try? validator.validate(bytes)) == nil)
        // Too large.
        bytes = Array(("images: 2\n# " + String(repeating: "x", count: 70_000) + "\n").utf8)
        do {
            _ = try validator.validate(bytes)
            Issue.record("accepted a large file")
        } catch { #expect(error.description.contains("limit")) }
        // A billion laughs.
        var bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        var prev = "a"
        for level in ["b", "c", "d", "e", "f", "g", "h", "i"] {
            bomb += "\(level): &\(level) [" + Array(repeating: "*\(prev)", count: 10).joined(separator: ", ") + "]\n"
            prev = level
        }
        let start = Date()
        do {
            _ = try validator.validate(Array(bomb.utf8))
            Issue.record("accepted an alias bomb")
        } catch { #expect(error.description.contains("alias")) }
        #expect(Date().timeIntervalSince(start) < 2)
        // Few aliases but a large expansion.
        var wide = "a: &a [" + Array(repeating: "0", count: 200).joined(separator: ", ") + "]\n"
        wide += "b: &b [" + Array(repeating: "*a", count: 8).joined(separator: ", ") + "]\n"
        wide += "c: [" + Array(repeating: "*b", count: 8).joined(separator: ", ") + "]\n"
        do {
            _ = try validator.validate(Array(wide.utf8))
            Issue.record("accepted a wide expansion")
        } catch { #expect(error.description.contains("nodes") || error.description.contains("alias")) }
        // A few aliases are allowed: an anchored value used again under a known key...
        #expect((try? validate("images: &n 2\npriority: *n\n"))?.priority == 2)
        // ...and an anchored mapping as a known key's value.
        #expect((try? validate("images: 2\nsampler: &s {kind: ddim}\n")) != nil)
        // An anchor does not make an unknown key acceptable: this one is rejected for "base".
        #expect((try? validate("base: &b 2\nimages: *b\n")) == nil)
        do {
            _ = try validator.validate(Array("base: &b 2\nimages: *b\n".utf8))
        } catch { #expect(error.mentions("base")) }
    }

    @Test func respacingMatchesGuidedDiffusion() throws {
        #expect(try SamplerSpec.respacedTimesteps("ddim50", diffusionSteps: 1000) == Array(stride(from: 0, to: 1000, by: 20)))
        #expect(try SamplerSpec.respacedTimesteps("10", diffusionSteps: 1000) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999])
        #expect(try SamplerSpec.respacedTimesteps("ddim1000", diffusionSteps: 1000).count == 1000)
        // Sections of 334, 333, 333; Python rounds half to even.
        let s = try SamplerSpec.respacedTimesteps("2,3,4", diffusionSteps: 1000)
        #expect(s == [0, 333, 334, 500, 666, 667, 778, 888, 999])
        #expect(throws: RespacingError.self) { try SamplerSpec.respacedTimesteps("ddim999", diffusionSteps: 1000) }
        #expect(throws: RespacingError.self) { try SamplerSpec.respacedTimesteps("500,500", diffusionSteps: 10) }
    }

    @Test func safeNames() {
        for good in ["a", "job-1", "A_b.c", String(repeating: "x", count: 64)] { #expect(SafeName.problem(good) == nil, "\(good)") }
        for bad in ["", ".", "..", "a/b", "/abs", "..x", "a..b", ".dot", "-dash", "sp ace", "tab\t", "é", String(repeating: "x", count: 65)] {
            #expect(SafeName.problem(bad) != nil, "\(bad)")
        }
        #expect(SafeName.problem(SafeName.sanitize("../../etc/passwd")) == nil)
        #expect(SafeName.problem(SafeName.sanitize("..")) == nil)
    }
}
