// swift-tools-version: 6.1
// DirectIO against the I/O libraries Swift users have today, on the same 4 KiB random-read
// workload. A separate package so that swift-nio (minutes to build) never enters DirectIO's
// own dependency graph, its build, or its CI.
import PackageDescription

let package = Package(
    name: "DirectIOBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "DirectIO", path: ".."),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "SwiftPeers",
            dependencies: [
                .product(name: "DirectIO", package: "DirectIO"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "_NIOFileSystem", package: "swift-nio"),
            ],
            swiftSettings: [.enableExperimentalFeature("Lifetimes")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
