import Foundation
import ImageCodecs

/// The JSON record embedded in every image (PNG iTXt `diffusiond`, JPEG COM)
/// and stored in its database row: enough to regenerate the image.
public struct GenerationRecord: Codable, Sendable, Equatable {
    public static let formatVersion = "diffusiond-image/1"

    public struct JobRef: Codable, Sendable, Equatable {
        public var id: Int64
        public var name: String
        public var fileSHA256: String
        enum CodingKeys: String, CodingKey { case id, name, fileSHA256 = "file_sha256" }
    }

    public struct ModelRef: Codable, Sendable, Equatable {
        public var name: String
        public var hash: String
    }

    public struct Software: Codable, Sendable, Equatable {
        public var name: String
        public var version: String
        public var host: String
        public var kernel: String
        public var kernelVersions: [String: String]
        public var precision: String
        public var threads: Int
        /// The CPU's model and caches (`CPUDescription.recordName`): fp32 bits follow them. Nil in
        /// records written before records named it, and for the test generator.
        public var cpu: String? = nil
        enum CodingKeys: String, CodingKey {
            case name, version, host, kernel, kernelVersions = "kernel_versions", precision, threads, cpu
        }
    }

    public var format: String = GenerationRecord.formatVersion
    public var job: JobRef
    public var index: Int
    public var seed: UInt64
    public var seedDerivation: String
    public var classRef: ClassRef?
    public var model: ModelRef
    /// The classifier that guided the image (classifier-guided jobs only).
    public var classifier: ModelRef?
    public var spec: JobSpec
    public var software: Software
    public var fields: [String: String]
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case format, job, index, seed, seedDerivation = "seed_derivation", classRef = "class", model, classifier, spec
        case software, fields, createdAt = "created_at"
    }

    public func jsonString() -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? enc.encode(self)) ?? Data(), as: UTF8.self)
    }

    public static func parse(_ json: String) throws -> GenerationRecord {
        try JSONDecoder().decode(GenerationRecord.self, from: Data(json.utf8))
    }

    /// AUTOMATIC1111-style text: a first line with the class, then `Key: value` pairs.
    public var parametersText: String {
        let s = spec.sampler
        var pairs: [(String, String)] = [("Steps", s.steps.map(String.init) ?? "\(s.langevin.map { $0.levels * $0.stepsPerLevel } ?? 0)"),
                                         ("Sampler", s.kind.jobName)]
        if let r = s.respacing { pairs.append(("Respacing", r)) }
        if let e = s.eta { pairs.append(("Eta", String(e))) }
        if let v = s.variance { pairs.append(("Variance", v.rawValue)) }
        if let g = s.guidanceScale { pairs.append((spec.mode == .classifierFree ? "CFG scale" : "Classifier scale", String(g))) }
        if let c = s.classifier { pairs.append(("Classifier", c)) }
        if let c = classifier { pairs.append(("Classifier hash", String(c.hash.prefix(10)))) }
        if let l = s.langevin {
            pairs.append(("Langevin", "levels \(l.levels), steps per level \(l.stepsPerLevel), step size \(l.stepSize), final denoise \(l.finalDenoising)"))
        }
        pairs += [("Clip", String(s.clip)), ("Seed", String(seed)), ("Image index", String(index)),
                  ("Size", "\(spec.width)x\(spec.height)"), ("Model", model.name),
                  ("Model hash", String(model.hash.prefix(10))), ("Mode", spec.mode.rawValue),
                  ("Job", "\(job.id) \(job.name)"), ("Version", "\(software.name) \(software.version)")]
        let head = classRef.map { "class \($0.index): \($0.name)" } ?? "unconditional"
        return head + "\n" + pairs.map { "\($0.0): \($0.1)" }.joined(separator: ", ")
    }
}

/// The daemon's version string, recorded everywhere.
public enum DaemonVersion {
    public static let string = "0.1.0"
}
