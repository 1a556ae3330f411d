// swift-tools-version:6.0
import PackageDescription

// Layers (see ../shared/design/architecture.md):
//   0  pure code: WarrenCrypto, WarrenPacket, WireGuardProtocol, WarrenPolicy
//   1  engines (I/O): WarrenLinux (+ its C shim), WireGuardDevice
//   2  executables: warren-wireguard, warren-control
let package = Package(
    name: "warren",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "warren-wireguard", targets: ["warren-wireguard"]),
        .executable(name: "warren-control", targets: ["warren-control"]),
        .library(name: "WarrenCrypto", targets: ["WarrenCrypto"]),
        .library(name: "WireGuardProtocol", targets: ["WireGuardProtocol"]),
        .library(name: "WarrenPolicy", targets: ["WarrenPolicy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
    ],
    targets: [
        // Layer 0
        .target(name: "WarrenCrypto", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "WarrenPacket"),
        .target(name: "WireGuardProtocol", dependencies: [
            "WarrenCrypto", "WarrenPacket", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "WarrenTailcfg", dependencies: ["WarrenPacket", "TailscaleKeys"]),
        .target(name: "WarrenPolicy", dependencies: ["WarrenPacket", "WarrenTailcfg"]),
        .target(name: "TailscaleKeys", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "TailscaleControlProtocol", dependencies: [
            "TailscaleKeys", "WarrenCrypto", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "DERPProtocol", dependencies: [
            "TailscaleKeys", "WarrenPacket", "WarrenCrypto", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "STUNProtocol", dependencies: ["WarrenPacket", .product(name: "Crypto", package: "swift-crypto")]),
        // Support for tests (bounded mutation fuzzing); never linked into a product.
        .target(name: "WarrenTestSupport"),
        // Layer 1
        .target(name: "CWarrenLinux"),
        .target(name: "WarrenLinux", dependencies: ["CWarrenLinux"]),
        .target(name: "WireGuardDevice", dependencies: [
            "WireGuardProtocol", "WarrenPacket", "WarrenCrypto", "WarrenLinux",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Layer 2
        .executableTarget(name: "warren-wireguard", dependencies: [
            "WireGuardDevice", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "warren-control", dependencies: [
            "WarrenPolicy", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Tests
        .testTarget(name: "WarrenCryptoTests", dependencies: [
            "WarrenCrypto", "WarrenTestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "WarrenPacketTests", dependencies: ["WarrenPacket", "WarrenTestSupport"]),
        .testTarget(name: "WireGuardProtocolTests", dependencies: ["WireGuardProtocol", "WarrenCrypto", "WarrenTestSupport"]),
        .testTarget(name: "WarrenPolicyTests", dependencies: ["WarrenPolicy", "WarrenPacket", "WarrenTailcfg", "WarrenTestSupport"]),
        .testTarget(name: "WireGuardDeviceTests", dependencies: ["WireGuardDevice", "WireGuardProtocol", "WarrenTestSupport"]),
        .testTarget(name: "InteropTests", dependencies: []),
        .testTarget(name: "TailscaleKeysTests", dependencies: ["TailscaleKeys", "WarrenTestSupport"]),
        .testTarget(name: "TailscaleControlProtocolTests", dependencies: [
            "TailscaleControlProtocol", "TailscaleKeys", "WarrenTestSupport",
        ]),
        .testTarget(name: "DERPProtocolTests", dependencies: [
            "DERPProtocol", "TailscaleKeys", "WarrenPacket", "WarrenTestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "WarrenTailcfgTests", dependencies: [
            "WarrenTailcfg", "TailscaleKeys", "WarrenPacket", "WarrenTestSupport",
        ]),
        .testTarget(name: "STUNProtocolTests", dependencies: ["STUNProtocol", "WarrenPacket", "WarrenTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
