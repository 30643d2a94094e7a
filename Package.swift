// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "diffusiond",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "DiffusionEngine", targets: ["DiffusionEngine"]),
        .library(name: "ModelBundles", targets: ["ModelBundles"]),
        .executable(name: "diffusion-bench", targets: ["diffusion-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // C libraries, one system-library target each.
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas"),
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),

        // The engine: tensors, kernels, networks, schedules, samplers. No files, no daemon.
        .target(
            name: "DiffusionEngine",
            dependencies: ["CBLAS", "CDNNL"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),

        // Model bundle folders: model.json, checksums, safetensors files -> engine networks.
        .target(
            name: "ModelBundles",
            dependencies: ["DiffusionEngine", .product(name: "Crypto", package: "swift-crypto")]
        ),

        // Throughput benchmark of the UNet against the machine's measured peak.
        .executableTarget(
            name: "diffusion-bench",
            dependencies: ["DiffusionEngine", "ModelBundles"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),

        .testTarget(name: "DiffusionEngineTests", dependencies: ["DiffusionEngine", "ModelBundles"],
                    resources: []),
    ]
)
