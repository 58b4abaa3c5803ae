// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "DirectIO",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "DirectIO", targets: ["DirectIO"]),
        .library(name: "DirectIOTesting", targets: ["DirectIOTesting"]),
        .library(name: "DirectIOLog", targets: ["DirectIOLog"]),
        .executable(name: "dio", targets: ["dio"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // The only C in the package: raw system calls Swift cannot make (variadic syscall()),
        // mirrored kernel structs with size checks, and constants older headers lack.
        .target(name: "CDirectIO"),
        .target(
            name: "DirectIO",
            dependencies: [
                "CDirectIO",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Fault injection for testing storage code built on DirectIO (and DirectIO itself).
        .target(
            name: "DirectIOTesting",
            dependencies: ["DirectIO", .product(name: "SystemPackage", package: "swift-system")]
        ),
        // A durable append log with group commit, for databases' write-ahead logs.
        .target(name: "DirectIOLog", dependencies: ["DirectIO"]),
        // The commands of `dio` (inspect, bench), as a library so tests can drive them.
        .target(
            name: "DIOCommands",
            dependencies: [
                "DirectIO", "DirectIOLog", "CDirectIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .executableTarget(name: "dio", dependencies: ["DIOCommands"]),
        .testTarget(
            name: "DirectIOTests",
            dependencies: [
                "DirectIO", "DirectIOTesting", "DirectIOLog", "CDirectIO", "DIOCommands", "dio",
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
