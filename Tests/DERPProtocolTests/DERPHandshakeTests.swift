import DERPProtocol
import Foundation
import TailscaleKeys
import WarrenTestSupport
import XCTest

/// A seeded nonce source for tests (the I/O layer uses a secure generator).
final class SeededNonces: @unchecked Sendable {
    private var rng: SeededGenerator
    private let lock = NSLock()
    init(seed: UInt64) { rng = SeededGenerator(seed: seed) }
    func next() -> [UInt8] { lock.withLock { rng.bytes(count: 24) } }
}

final class DERPHandshakeTests: XCTestCase {
    struct Parties {
        var rng = SeededGenerator(seed: 0xDE_72)
        let serverPrivate: NodePrivate
        let clientPrivate: NodePrivate
        let serverSealer: DERPNaClSealer
        let clientSealer: DERPNaClSealer

        init() {
            serverPrivate = NodePrivate.generate(using: &rng)
            clientPrivate = NodePrivate.generate(using: &rng)
            let serverNonces = SeededNonces(seed: 1)
            let clientNonces = SeededNonces(seed: 2)
            serverSealer = DERPNaClSealer(privateKey: serverPrivate, nonce: { serverNonces.next() })
            clientSealer = DERPNaClSealer(privateKey: clientPrivate, nonce: { clientNonces.next() })
        }
    }

    private func frames(_ bytes: [UInt8]) throws -> [DERPFrame] {
        var decoder = DERPFrameDecoder()
        decoder.append(bytes)
        var out: [DERPFrame] = []
        while let frame = try decoder.nextFrame() { out.append(frame) }
        return out
    }

    func testLoginBothSides() throws {
        let p = Parties()
        let mesh = try XCTUnwrap(DERPMeshKey(hex: String(repeating: "ab", count: 32) + "\n"))
        var server = DERPServerHandshake(serverKey: p.serverPrivate.publicKey)
        var client = DERPClientHandshake(clientKey: p.clientPrivate.publicKey,
                                         clientInfo: DERPClientInfo(meshKey: mesh, canAckPings: true, appName: "warren"))

        let serverKey = try XCTUnwrap(try frames(server.serverKeyFrame).first)
        let clientInfo = try client.receive(serverKey, sealer: p.clientSealer)
        XCTAssertEqual(client.state, .awaitingServerInfo(server: p.serverPrivate.publicKey))
        let serverInfo = try server.receive(try XCTUnwrap(try frames(clientInfo).first), sealer: p.serverSealer,
                                            serverInfo: DERPServerInfo(tokenBucketBytesPerSecond: 1000, tokenBucketBytesBurst: 2000))
        guard case .established(let who, let info) = server.state else { return XCTFail("server not established") }
        XCTAssertEqual(who, p.clientPrivate.publicKey)
        XCTAssertEqual(info.meshKey, mesh)
        XCTAssertTrue(info.canAckPings)
        XCTAssertEqual(info.version, 2)
        XCTAssertEqual(info.appName, "warren")

        XCTAssertEqual(try client.receive(try XCTUnwrap(try frames(serverInfo).first), sealer: p.clientSealer), [])
        XCTAssertEqual(client.state, .established(server: p.serverPrivate.publicKey,
                                                  info: DERPServerInfo(tokenBucketBytesPerSecond: 1000, tokenBucketBytesBurst: 2000)))
    }

    func testFastStartAndOutOfOrderFrames() throws {
        let p = Parties()
        var client = DERPClientHandshake(clientKey: p.clientPrivate.publicKey)
        XCTAssertThrowsError(try client.receive(.keepAlive, sealer: p.clientSealer))
        let clientInfo = try client.startKnowingServerKey(p.serverPrivate.publicKey, sealer: p.clientSealer)
        XCTAssertEqual(clientInfo.first, 0x02)
        XCTAssertThrowsError(try client.receive(.serverKey(p.serverPrivate.publicKey), sealer: p.clientSealer))

        var server = DERPServerHandshake(serverKey: p.serverPrivate.publicKey)
        XCTAssertThrowsError(try server.receive(.sendPacket(destination: p.serverPrivate.publicKey, packet: []), sealer: p.serverSealer))
    }

    func testForgedClientInfoIsRejected() throws {
        var p = Parties()
        let mallory = NodePrivate.generate(using: &p.rng)
        let malloryNonces = SeededNonces(seed: 9)
        let mallorySealer = DERPNaClSealer(privateKey: mallory, nonce: { malloryNonces.next() })
        // Mallory boxes with her own key but claims to be the client.
        let sealed = try mallorySealer.seal(Array(#"{"CanAckPings":false,"version":2}"#.utf8), to: p.serverPrivate.publicKey)
        var server = DERPServerHandshake(serverKey: p.serverPrivate.publicKey)
        XCTAssertThrowsError(try server.receive(.clientInfo(clientKey: p.clientPrivate.publicKey, sealedInfo: sealed),
                                                sealer: p.serverSealer)) { error in
            XCTAssertEqual((error as? DERPProtocolError)?.code, .boxOpenFailed)
        }
        XCTAssertEqual(server.state, .awaitingClientInfo)
    }

    func testInfoJSONUsesGoFieldNames() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let mesh = try XCTUnwrap(DERPMeshKey(hex: String(repeating: "0f", count: 32)))
        XCTAssertEqual(String(decoding: try encoder.encode(DERPClientInfo(meshKey: mesh, canAckPings: true)), as: UTF8.self),
                       #"{"CanAckPings":true,"meshKey":"\#(String(repeating: "0f", count: 32))","version":2}"#)
        XCTAssertEqual(String(decoding: try encoder.encode(DERPClientInfo()), as: UTF8.self), #"{"CanAckPings":false,"version":2}"#)
        XCTAssertEqual(String(decoding: try encoder.encode(DERPServerInfo()), as: UTF8.self), #"{"version":2}"#)
        let decoded = try JSONDecoder().decode(DERPClientInfo.self, from: Data(#"{"version":2,"CanAckPings":true,"IsProber":true}"#.utf8))
        XCTAssertEqual(decoded, DERPClientInfo(canAckPings: true, isProber: true))
        // Older clients send an empty mesh key when they have none; a malformed one is refused.
        let older = try JSONDecoder().decode(DERPClientInfo.self, from: Data(#"{"meshKey":"","version":2,"CanAckPings":true}"#.utf8))
        XCTAssertEqual(older, DERPClientInfo(canAckPings: true))
        XCTAssertThrowsError(try JSONDecoder().decode(DERPClientInfo.self, from: Data(#"{"meshKey":"abc","version":2}"#.utf8)))
    }

    func testFuzzServerHandshake() throws {
        let p = Parties()
        var client = DERPClientHandshake(clientKey: p.clientPrivate.publicKey)
        let seed = try client.startKnowingServerKey(p.serverPrivate.publicKey, sealer: p.clientSealer)
        MutationFuzzer(seeds: [seed], iterations: 3_000, maximumLength: 600).run { bytes in
            var decoder = DERPFrameDecoder()
            decoder.append(bytes)
            guard let frame = try? decoder.nextFrame() else { return }
            var server = DERPServerHandshake(serverKey: p.serverPrivate.publicKey)
            if (try? server.receive(frame, sealer: p.serverSealer)) != nil {
                // X25519 ignores the top bit of a public key (RFC 7748), so the claimed key may differ
                // from the real one in that bit alone, in Go's server as here.
                var accepted = Array(bytes.prefix(seed.count))
                var expected = seed
                accepted[5 + 31] &= 0x7F
                expected[5 + 31] &= 0x7F
                XCTAssertEqual(accepted, expected, "only the genuine ClientInfo may be accepted")
            }
        }
    }
}
