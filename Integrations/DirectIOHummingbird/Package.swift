// swift-tools-version: 6.1
// DirectIO in Hummingbird: a FileProvider that serves files with O_DIRECT reads into pinned
// pool buffers, and an example server to measure it against Hummingbird's LocalFileSystem.
// A separate package so that Hummingbird and SwiftNIO (minutes to build) never enter
// DirectIO's own build; it depends on the root package by path. (Its folder is not called
// Hummingbird: a package's identity is its folder's name, which would clash with hummingbird's.)
import PackageDescription

let package = Package(
    name: "DirectIOHummingbird",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "DirectIOHummingbird", targets: ["DirectIOHummingbird"]),
        .library(name: "DirectIOServiceLifecycle", targets: ["DirectIOServiceLifecycle"]),
        .executable(name: "directio-file-server", targets: ["DirectIOFileServer"]),
    ],
    dependencies: [
        .package(name: "DirectIO", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .target(
            name: "DirectIOHummingbird",
            dependencies: [
                .product(name: "DirectIO", package: "DirectIO"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // IORuntime as a swift-service-lifecycle Service (any server, not only Hummingbird).
        .target(
            name: "DirectIOServiceLifecycle",
            dependencies: [
                .product(name: "DirectIO", package: "DirectIO"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "DirectIOFileServer",
            dependencies: [
                "DirectIOHummingbird", "DirectIOServiceLifecycle",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "DirectIOHummingbirdTests",
            dependencies: [
                "DirectIOHummingbird", "DirectIOServiceLifecycle",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DirectIO", package: "DirectIO"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
