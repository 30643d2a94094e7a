import Foundation

/// The model bundle the deterministic test generator runs on: a manifest only (three classes and a
/// null class, 28x28x1), since that generator makes its images without weights. Shared by the
/// daemon's tests and the benchmark's fleet stage.
public enum TestGeneratorBundle {
    /// Writes `<models>/<name>/model.json`, making the folders.
    public static func write(into models: String, name: String = "fm") throws {
        try FileManager.default.createDirectory(atPath: models + "/" + name, withIntermediateDirectories: true)
        try """
        {"format": "diffusiond-bundle/1", "name": "\(name)", "kind": "unet", "classes": ["T-shirt/top", "Trouser", "Pullover"],
         "null_class": 3, "data": {"height": 28, "width": 28, "channels": 1}, "diffusion": {"steps": 1000, "variance": "learned_range"}}
        """.write(toFile: models + "/" + name + "/model.json", atomically: true, encoding: .utf8)
    }
}
