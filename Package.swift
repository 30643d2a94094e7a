// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "diffusiond",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "DiffusionEngine", targets: ["DiffusionEngine"]),
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

        .testTarget(name: "DiffusionEngineTests", dependencies: ["DiffusionEngine"],
                    resources: []),
    ]
)
