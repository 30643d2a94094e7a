import Foundation
import ImageCodecs
import Provenance

/// The contact sheet of a finished job: its images in a grid (one row per class when the job
/// asks for `images_per_class`), the class name beside each row, and a header with the job,
/// the sampler and its steps, in the built-in bitmap font.
enum JobContactSheet {
    /// At most this many images go on a sheet.
    static let maximumImages = 1024

    /// The header lines: "job 3 demo", then the sampler, its steps and the mode.
    static func header(jobID: Int64, spec: JobSpec) -> [String] {
        let s = spec.sampler
        var sampler = s.kind.rawValue
        if let l = s.langevin {
            sampler += ", \(l.levels) levels x \(l.stepsPerLevel) steps"
        } else if let steps = s.steps {
            sampler += ", \(steps) steps"
            if let r = s.respacing, !r.isEmpty { sampler += " (\(r))" }
        }
        if let eta = s.eta { sampler += ", eta \(eta)" }
        var mode = spec.mode.rawValue
        if let g = s.guidanceScale { mode += " \(g)" }
        return ["job \(jobID) \(spec.name)", sampler + ", " + mode]
    }

    /// The label of each grid row: the class names of its images (usually one).
    static func rowLabels(classNames: [String?], columns: Int) -> [String] {
        stride(from: 0, to: classNames.count, by: max(1, columns)).map { start in
            var names: [String] = []
            for name in classNames[start ..< min(start + columns, classNames.count)].compactMap({ $0 })
            where !names.contains(name) { names.append(name) }
            return names.joined(separator: ", ")
        }
    }

    /// Reads the images of `rows` (those that decode) and lays them out.
    static func render(rows: [ImageRow], jobID: Int64, spec: JobSpec) -> RasterImage {
        var images: [RasterImage] = []
        var classNames: [String?] = []
        for row in rows.prefix(maximumImages) {
            if let decoded = try? ImageFile.read(path: row.path) {
                images.append(decoded.image)
                classNames.append(row.className)
            }
        }
        let columns = min(64, spec.imagesPerClass ?? max(1, Int(Double(images.count).squareRoot().rounded(.up))))
        let sheet = ContactSheet.make(images, columns: columns, padding: 2, header: header(jobID: jobID, spec: spec),
                                      rowLabels: rowLabels(classNames: classNames, columns: columns))
        return Upscale.nearest(sheet, factor: max(1, spec.output.upscale))
    }
}
