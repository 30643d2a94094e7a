import ArgumentParser
import DiffusionDaemon
import DiffusionEngine
import Foundation
import Metrics
import ModelBundles

extension DiffusionCtl {
    /// `diffusionctl gamma-table MODEL`: Analytic-DPM's Gamma tables computed by the engine, resumable.
    struct GammaTable: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "gamma-table",
            abstract: "Compute a UNet bundle's Analytic-DPM Gamma tables with the engine (resumable).",
            discussion: """
                For every timestep t: Gamma_t = mean ||eps_theta(x_t, t)||^2 / d over the first IMAGES training \
                images, one noise draw each, with the null class and with each image's own class. Writes \
                gamma.safetensors into the bundle and records images per timestep and wall time in model.json. \
                Progress is saved every few timesteps; run the same command again to continue.
                """)

        @OptionGroup var common: Common
        @Argument(help: "The model: a bundle name under the config's models folder, or a bundle folder.") var model: String
        @Option(help: "Training images per timestep.") var images = 1024
        @Option(help: "Folder with train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz.")
        var data = "/usr/share/datasets/fashion-mnist"
        @Option(help: "Stop (saving progress) after this many seconds.") var timeLimit: Double?
        @Option(help: "Compute threads (default: the config's threads).") var threads: Int?
        @Option(help: "Seed of the noise draws.") var seed: UInt64 = 2024

        func validate() throws {
            guard images > 0 else { throw ValidationError("--images must be positive, got \(images)") }
            if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
            if let timeLimit, !(timeLimit > 0) { throw ValidationError("--time-limit must be positive") }
        }

        func run() throws {
            KernelSelection.relaunchWithBestKernelsIfNeeded()
            let cfg = try common.loadConfig()
            let folder = FileManager.default.fileExists(atPath: model + "/model.json") ? model : cfg.models + "/" + model
            let bundle = try ModelBundle(directory: URL(fileURLWithPath: folder))
            let n = threads ?? cfg.threads
            ComputeRuntime.configure(blasThreads: n, dnnlThreads: n)
            let raster = try ImageSources.readIDXImages(path: data + "/train-images-idx3-ubyte.gz")
            let labels = try ImageSources.readIDXLabels(path: data + "/train-labels-idx1-ubyte.gz")
            let count = min(images, raster.count)
            guard count == images, let first = raster.first else {
                throw ValidationError("--images \(images): the data set has \(raster.count) images")
            }
            let x = Tensor(shape: [count, first.channels, first.height, first.width])
            let perImage = first.pixels.count
            for i in 0 ..< count {
                for (j, p) in raster[i].pixels.enumerated() { x.data[i * perImage + j] = Float(p) / 127.5 - 1 }
            }
            let job = GammaTableComputation(bundle: bundle, imagesPerTimestep: images, seed: seed)
            print("gamma-table: \(bundle.manifest.name), \(images) images per timestep, \(ComputeRuntime.summary)")
            var lastPrint = Date.distantPast
            let started = Date()
            let complete = try job.run(images: x, labels: labels, timeLimit: timeLimit ?? .infinity) { p in
                guard Date().timeIntervalSince(lastPrint) > 10 || p.timestepsDone == p.timesteps else { return }
                lastPrint = Date()
                // This run's evaluations over this run's time (the progress's wall time includes earlier runs).
                let rate = Double(p.networkEvaluations) / max(Date().timeIntervalSince(started), 1e-9)
                let left = Double(p.timesteps - p.timestepsDone) * Double(images * (bundle.manifest.nullClass != nil ? 2 : 1))
                let eta = p.networkEvaluations > 0 ? String(format: ", ETA %.0f s", left / rate) : ""
                let line = String(format: "gamma-table: %d/%d timesteps, %.0f evaluations/s", p.timestepsDone, p.timesteps, rate) + eta
                FileHandle.standardOutput.write(Data((line + "\n").utf8))
            }
            print(complete ? "gamma-table: wrote \(folder)/gamma.safetensors and model.json"
                           : "gamma-table: time limit reached; progress saved in \(job.progressPath); run again to continue")
        }
    }
}
