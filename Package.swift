// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "DirectIO",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "DirectIO", targets: ["DirectIO"]),
        .executable(name: "dio", targets: ["dio"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
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
            ]
        ),
        .executableTarget(
            name: "dio",
            dependencies: [
                "DirectIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "DirectIOTests",
            dependencies: ["DirectIO", "CDirectIO", "dio"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
