// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "diffusiond",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "DiffusionEngine", targets: ["DiffusionEngine"]),
        .library(name: "ModelBundles", targets: ["ModelBundles"]),
        .library(name: "ImageCodecs", targets: ["ImageCodecs"]),
        .library(name: "Provenance", targets: ["Provenance"]),
        .library(name: "Metrics", targets: ["Metrics"]),
        .library(name: "DiffusionDaemon", targets: ["DiffusionDaemon"]),
        .executable(name: "diffusiond", targets: ["diffusiond"]),
        .executable(name: "diffusionctl", targets: ["diffusionctl"]),
        .executable(name: "diffusion-bench", targets: ["diffusion-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio", exact: "1.33.2"),
    ],
    targets: [
        // C libraries, one system-library target each.
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas"),
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL"),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // The engine's own Winograd convolution kernel (AVX-512 intrinsics; optimised in every build,
        // its unrolled products are what make it fast).
        .target(name: "CWinograd", cSettings: [.unsafeFlags(["-O2"])]),

        // The engine: tensors, kernels, networks, schedules, samplers. No files, no daemon.
        .target(
            name: "DiffusionEngine",
            dependencies: ["CBLAS", "CDNNL", "CWinograd"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),

        // The one SHA-256 hex helper (bundle checksums, job files, image rows).
        .target(name: "Digests", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),

        // Model bundle folders: model.json, checksums, safetensors files -> engine networks.
        .target(name: "ModelBundles", dependencies: ["DiffusionEngine", "Digests"]),

        // libpng / libjpeg behind a few C functions that trap their errors with setjmp.
        .target(
            name: "CImageCodecs",
            linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("jpeg")]
        ),
        // PNG and JPEG files that carry their generation record; atomic writes; grids.
        .target(name: "ImageCodecs", dependencies: ["CImageCodecs"]),

        // Sample quality on a features bundle: features of images, FID, KID, precision/recall,
        // class accuracy, reference statistics and the data floor.
        .target(
            name: "Metrics",
            dependencies: ["DiffusionEngine", "ModelBundles", "ImageCodecs", "CBLAS", "CZlib"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),

        // The SQLite record of jobs, images, models, metrics and the environment.
        .target(
            name: "Provenance",
            dependencies: [
                "Digests",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),

        // The same record in a PostgreSQL database that daemons on several hosts share (docs/scale-out.md).
        .target(
            name: "ProvenancePostgres",
            dependencies: [
                "Provenance", "Digests",
                .product(name: "PostgresNIO", package: "postgres-nio", moduleAliases: ["Metrics": "SwiftMetrics"]),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // The daemon below its main loop: config, job files, spool, runner, notify, services,
        // and the engine behind the ImageGenerator protocol.
        .target(
            name: "DiffusionDaemon",
            dependencies: [
                "DiffusionEngine", "ModelBundles", "ImageCodecs", "Provenance", "ProvenancePostgres", "Metrics", "Digests",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "diffusiond",
            dependencies: [
                "DiffusionDaemon", "DiffusionEngine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // What diffusionctl reports (status, show, verify, regenerate, metrics, reference-stats), over the
        // store and the daemon's types; the daemon itself does not need it.
        .target(
            name: "DiffusionControl",
            dependencies: ["DiffusionDaemon", "DiffusionEngine", "ModelBundles", "ImageCodecs", "Provenance", "Metrics", "Digests"]
        ),
        .executableTarget(
            name: "diffusionctl",
            dependencies: [
                "DiffusionControl", "DiffusionDaemon", "DiffusionEngine", "ModelBundles", "Provenance", "ImageCodecs", "Metrics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // The benchmarks behind BENCHMARKS.md: engine throughput, the daemon end to end, the
        // quality sweep's samples and their metrics (make bench).
        // What the daemon's tests and the benchmark's daemon stage share: the notify socket.
        // and a throwaway PostgreSQL server for the store tests.
        .target(name: "DaemonTestSupport"),

        .executableTarget(
            name: "diffusion-bench",
            dependencies: ["DiffusionEngine", "ModelBundles", "DiffusionDaemon", "Provenance", "ProvenancePostgres", "ImageCodecs",
                           "Metrics", "Digests", "DaemonTestSupport"],
            swiftSettings: [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]
        ),

        // The job-file parser and validator under libFuzzer (make fuzz builds it with
        // --sanitize fuzzer -DFUZZING); a plain build is a replayer of job files.
        .executableTarget(name: "diffusiond-fuzz", dependencies: ["DiffusionDaemon"]),

        .testTarget(name: "DiffusionEngineTests", dependencies: ["DiffusionEngine", "ModelBundles", "Digests"]),
        .testTarget(name: "ImageCodecsTests", dependencies: ["ImageCodecs"]),
        .testTarget(name: "ProvenanceTests", dependencies: ["Provenance", "ProvenancePostgres", "DaemonTestSupport"]),
        .testTarget(name: "MetricsTests", dependencies: ["Metrics", "DiffusionEngine", "ModelBundles", "ImageCodecs"]),
        .testTarget(
            name: "DiffusionDaemonTests",
            dependencies: ["DiffusionDaemon", "DiffusionControl", "Provenance", "ProvenancePostgres", "ImageCodecs", "Metrics", "Digests",
                           "DaemonTestSupport", "diffusiond",
                           "diffusionctl"]
        ),
    ]
)
