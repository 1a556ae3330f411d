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
        .executable(name: "warren-filter-bench", targets: ["warren-filter-bench"]),
        .executable(name: "warren-policy-bench", targets: ["warren-policy-bench"]),
        .library(name: "WarrenCrypto", targets: ["WarrenCrypto"]),
        .library(name: "WireGuardProtocol", targets: ["WireGuardProtocol"]),
        .library(name: "WarrenPolicy", targets: ["WarrenPolicy"]),
        .library(name: "WarrenFastAEAD", targets: ["WarrenFastAEAD"]),
        .executable(name: "warren-crypto-bench", targets: ["warren-crypto-bench"]),
        .executable(name: "warren-handshake-bench", targets: ["warren-handshake-bench"]),
        .executable(name: "warren-offload-bench", targets: ["warren-offload-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
    ],
    targets: [
        // Layer 0
        .target(name: "WarrenCrypto", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "WarrenPacket"),
        // In-place ChaCha20-Poly1305 for the data plane over the system OpenSSL (libcrypto).
        .systemLibrary(name: "CWarrenOpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .target(name: "WarrenFastAEAD", dependencies: ["CWarrenOpenSSL"]),
        .target(name: "WireGuardProtocol", dependencies: [
            "WarrenCrypto", "WarrenPacket", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "WarrenTailcfg"),
        .target(name: "WarrenPolicy", dependencies: ["WarrenPacket", "WarrenTailcfg"]),
        .target(name: "WireGuardUAPI", dependencies: ["WarrenPacket", "WireGuardProtocol"]),
        .target(name: "WarrenFilter", dependencies: ["WarrenPacket", "WarrenTailcfg"]),
        // Support for tests (bounded mutation fuzzing); never linked into a product.
        .target(name: "WarrenTestSupport"),
        // Layer 1
        .target(name: "CWarrenLinux"),
        .target(name: "WireGuardUAPIServer", dependencies: ["WireGuardUAPI"]),
        // TUN with IFF_VNET_HDR and TUNSETOFFLOAD; UDP_SEGMENT/UDP_GRO batches.
        .target(name: "CWarrenOffload"),
        .target(name: "WarrenLinux", dependencies: ["CWarrenLinux", "CWarrenOffload", "WarrenPacket"]),
        .target(name: "WireGuardDevice", dependencies: [
            "WireGuardProtocol", "WarrenPacket", "WarrenCrypto", "WarrenLinux", "WireGuardUAPI", "WarrenFastAEAD",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Layer 2
        .executableTarget(name: "warren-wireguard", dependencies: [
            "WireGuardDevice", "WireGuardUAPI", "WireGuardUAPIServer", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "warren-crypto-bench", dependencies: [
            "WarrenCrypto", "WarrenFastAEAD", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "warren-control", dependencies: [
            "WarrenPolicy", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Benchmark (run on demand): packets per second per core through parse + filter.
        .executableTarget(name: "warren-filter-bench", dependencies: ["WarrenFilter", "WarrenPacket", "WarrenTailcfg"]),
        // Benchmark (run on demand): WireGuard handshakes per second on one thread.
        .executableTarget(name: "warren-handshake-bench", dependencies: ["WireGuardProtocol"]),
        // Benchmark (run on demand): policy compile, largest filter, memory, recompute after a join.
        .executableTarget(name: "warren-policy-bench", dependencies: ["WarrenPolicy", "WarrenPacket", "WarrenTailcfg"]),
        // Benchmark (run on demand): packets per second through GSO segmentation and TCP coalescing.
        .executableTarget(name: "warren-offload-bench", dependencies: ["WarrenPacket", "WarrenLinux", "CWarrenOffload"]),
        // Tests
        .testTarget(name: "WarrenCryptoTests", dependencies: [
            "WarrenCrypto", "WarrenTestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "WarrenFastAEADTests", dependencies: [
            "WarrenFastAEAD", "WarrenTestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "WarrenPacketTests", dependencies: ["WarrenPacket", "WarrenTestSupport"]),
        .testTarget(name: "WireGuardProtocolTests", dependencies: ["WireGuardProtocol", "WarrenCrypto", "WarrenTestSupport"]),
        .testTarget(name: "WarrenPolicyTests", dependencies: ["WarrenPolicy", "WarrenPacket", "WarrenTailcfg", "WarrenTestSupport"]),
        .testTarget(name: "WireGuardDeviceTests", dependencies: ["WireGuardDevice", "WireGuardProtocol", "WarrenTestSupport"]),
        .testTarget(name: "WireGuardUAPITests", dependencies: ["WireGuardUAPI", "WireGuardProtocol", "WarrenPacket", "WarrenTestSupport"]),
        .testTarget(name: "WireGuardUAPIServerTests", dependencies: ["WireGuardUAPIServer", "WireGuardUAPI", "WireGuardProtocol"]),
        .testTarget(name: "WarrenFilterTests", dependencies: ["WarrenFilter", "WarrenPacket", "WarrenTailcfg", "WarrenTestSupport"]),
        .testTarget(name: "InteropTests", dependencies: []),
        .testTarget(name: "WarrenLinuxOffloadTests", dependencies: ["WarrenLinux", "WarrenPacket", "CWarrenOffload"]),
    ],
    swiftLanguageModes: [.v6]
)
