// The module rules of ../shared/design/architecture.md, checked against what the sources import:
// layer 0 does no I/O (no NIO, no logging, no sockets module, no engine); nothing but an executable
// or a test imports a composition root; the node never links the coordination server; every module
// has a place in the table below, so a new module has to be placed (and the architecture page
// updated) before this passes.

import Foundation
import XCTest

final class LayeringTests: XCTestCase {
    /// Pure code: decoders, state machines, wire types, crypto, policy, filter, network map.
    static let layer0: Set<String> = [
        "WarrenCrypto", "WarrenPacket", "WireGuardProtocol", "WarrenPolicy", "WarrenTailcfg", "TailscaleKeys",
        "TailscaleControlProtocol", "DERPProtocol", "STUNProtocol", "WarrenFilter", "WarrenControlStore",
        "DiscoProtocol", "WarrenNetMap", "WarrenDNS", "WireGuardUAPI", "WarrenFastAEAD", "CWarrenOpenSSL", "WarrenTestSupport",
    ]
    /// Engines: sockets, devices, servers, clients.
    static let layer1: Set<String> = [
        "CWarrenLinux", "CWarrenZstd", "WarrenLinux", "WarrenPacketIO", "WireGuardDevice", "WireGuardUAPIServer", "WarrenControlSQLite",
        "WarrenControlAdmin", "WarrenControlServer", "WarrenControlMetrics", "WarrenControlClient", "WarrenDERPTransport",
        "WarrenDERPServer", "WarrenDERPClient", "WarrenControlTransport", "WarrenNodeControl", "WarrenMagicsock",
        "WarrenLocalAPI", "WarrenListenerGuard", "WarrenDNSServer", "WarrenTestProbes", "WarrenControlPostgres", "WarrenControlOIDC",
    ]
    /// Composition roots: wiring only executables (and tests) use.
    static let compositionRoots: Set<String> = ["WarrenNode"]
    /// The node's modules: none of them may link the coordination server or its store.
    static let nodeModules: Set<String> = [
        "WarrenNode", "WarrenMagicsock", "WarrenNodeControl", "WarrenLocalAPI", "WarrenNetMap", "DiscoProtocol", "WarrenDNS", "WarrenDNSServer", "warrend", "warren",
    ]
    static let serverModules: Set<String> = [
        "WarrenControlServer", "WarrenControlSQLite", "WarrenControlAdmin", "WarrenControlMetrics", "WarrenDERPServer",
        "WarrenControlClient", "WarrenControlStore", "WarrenControlPostgres", "WarrenControlOIDC",
    ]
    /// What layer 0 may import besides itself: the standard library's companions, swift-crypto, and bcrypt
    /// (hummingbird-auth's HummingbirdBcrypt: C code, no I/O; the store checks headscale's imported key hashes with it).
    static let pureSystemModules: Set<String> = [
        "Foundation", "Synchronization", "Crypto", "_CryptoExtras", "Glibc", "Darwin", "Musl", "HummingbirdBcrypt",
    ]

    static var sourcesDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources")
    }

    /// Module name to the modules its Swift files import.
    static func imports() throws -> [String: Set<String>] {
        let fm = FileManager.default
        var out: [String: Set<String>] = [:]
        for module in try fm.contentsOfDirectory(atPath: sourcesDirectory.path) where !module.hasPrefix(".") {
            var found = Set<String>()
            let root = sourcesDirectory.appendingPathComponent(module)
            guard let walker = fm.enumerator(atPath: root.path) else { continue }
            for case let file as String in walker where file.hasSuffix(".swift") {
                let text = try String(contentsOf: root.appendingPathComponent(file), encoding: .utf8)
                for line in text.split(separator: "\n") {
                    if let name = importedModule(String(line)) { found.insert(name) }
                }
            }
            out[module] = found
        }
        return out
    }

    /// The module an `import` line names ("import X", "public import X.Y", "@testable import X", "import struct X.T").
    static func importedModule(_ line: String) -> String? {
        var words = line.trimmingCharacters(in: .whitespaces).split(separator: " ").map(String.init)
        while let first = words.first, first.hasPrefix("@") || ["public", "internal", "package", "private", "fileprivate"].contains(first) {
            words.removeFirst()
        }
        guard words.first == "import", words.count >= 2 else { return nil }
        var name = words[1]
        if ["struct", "class", "enum", "protocol", "func", "var", "let", "typealias"].contains(name), words.count >= 3 { name = words[2] }
        return name.split(separator: ".").first.map(String.init)
    }

    func testTheImportParserReadsEveryForm() {
        XCTAssertEqual(Self.importedModule("import Foundation"), "Foundation")
        XCTAssertEqual(Self.importedModule("public import NIOCore"), "NIOCore")
        XCTAssertEqual(Self.importedModule("@testable import WarrenNode"), "WarrenNode")
        XCTAssertEqual(Self.importedModule("internal import struct Crypto.SHA256"), "Crypto")
        XCTAssertNil(Self.importedModule("// import Nothing"))
        XCTAssertNil(Self.importedModule("let important = 1"))
    }

    func testEveryModuleHasAPlace() throws {
        let all = try Self.imports()
        XCTAssertGreaterThan(all.count, 30, "read no sources from \(Self.sourcesDirectory.path)")
        let placed = Self.layer0.union(Self.layer1).union(Self.compositionRoots)
        for module in all.keys.sorted() where !Self.isExecutable(module) {
            XCTAssertTrue(placed.contains(module), "\(module) is in no layer: place it in LayeringTests and architecture.md")
        }
    }

    static func isExecutable(_ module: String) -> Bool { module.first?.isLowercase == true }

    func testLayerZeroDoesNoIO() throws {
        let all = try Self.imports()
        for module in Self.layer0 {
            for imported in all[module] ?? [] {
                let allowed = Self.layer0.contains(imported) || Self.pureSystemModules.contains(imported)
                XCTAssertTrue(allowed, "layer-0 module \(module) imports \(imported)")
            }
        }
    }

    func testNothingButExecutablesImportsACompositionRootOrAnExecutable() throws {
        let all = try Self.imports()
        let executables = Set(all.keys.filter(Self.isExecutable))
        for (module, imported) in all {
            XCTAssertTrue(imported.isDisjoint(with: executables), "\(module) imports an executable: \(imported.intersection(executables))")
            if !Self.isExecutable(module) {
                let roots = imported.intersection(Self.compositionRoots).subtracting([module])
                XCTAssertTrue(roots.isEmpty, "\(module) imports the composition root \(roots)")
            }
        }
    }

    func testEnginesDoNotImportTestSupport() throws {
        let all = try Self.imports()
        for module in Self.layer1.union(Self.compositionRoots) {
            XCTAssertFalse(all[module]?.contains("WarrenTestSupport") ?? false, "\(module) imports WarrenTestSupport")
        }
    }

    func testTheNodeNeverLinksTheCoordinationServer() throws {
        let all = try Self.imports()
        for module in Self.nodeModules {
            let server = (all[module] ?? []).intersection(Self.serverModules)
            XCTAssertTrue(server.isEmpty, "\(module) imports server modules \(server)")
        }
        // And the control client used by tests and benchmarks stays a client.
        XCTAssertFalse(all["WarrenControlClient"]?.contains("WarrenControlServer") ?? true)
    }
}
