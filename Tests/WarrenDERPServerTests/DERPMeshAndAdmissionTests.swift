// Mesh peers (WatchConns, PeerPresent, ForwardPacket) and admission through an HTTP endpoint.

import DERPProtocol
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPServer
import WarrenPacket
import WarrenTestSupport
import XCTest

final class DERPMeshTests: XCTestCase {
    func testMeshPeerWatchesConnectionsAndForwards() async throws {
        let meshKey = try XCTUnwrap(DERPMeshKey(hex: String(repeating: "ab", count: 32)))
        let relay = try await RelayHarness(configure: { $0.meshKey = meshKey })
        defer { relay.stop() }
        let a = try await relay.connect()
        let readA = FrameReader(a)
        let mesh = try await relay.connect(info: DERPClientInfo(meshKey: meshKey, canAckPings: true))
        let readMesh = FrameReader(mesh)
        let present: @Sendable (DERPFrame) -> DERPPeerPresent? = { frame in
            if case .peerPresent(let present) = frame { return present }
            return nil
        }
        try await mesh.send(.watchConns)
        let first = try await withDeadline { try await readMesh.next(present) }
        XCTAssertEqual(first?.key, a.publicKey)
        XCTAssertEqual(first?.address, IPAddress("127.0.0.1"))
        XCTAssertEqual(first?.port, UInt16(clamping: a.channel.localAddress?.port ?? 0))
        XCTAssertEqual(first?.flags, .isRegular)

        let b = try await relay.connect()
        let second = try await withDeadline { try await readMesh.next(present) }
        XCTAssertEqual(second?.key, b.publicKey)

        // A packet another relay of the region forwards reaches the local client with its source.
        let remote = relay.newKey().publicKey
        try await mesh.send(.forwardPacket(source: remote, destination: a.publicKey, packet: [5, 6]))
        let forwarded = try await withDeadline { try await readA.nextPacket() }
        XCTAssertEqual(forwarded?.0, remote)
        XCTAssertEqual(forwarded?.1, [5, 6])

        let bKey = b.publicKey
        await b.close()
        let gone = try await withDeadline {
            try await readMesh.next { frame -> NodePublic? in
                if case .peerGone(let key, _) = frame { return key }
                return nil
            }
        }
        XCTAssertEqual(gone, bKey)

        // ClosePeer disconnects a client.
        try await mesh.send(.closePeer(a.publicKey))
        try await withDeadline { try await a.channel.closeFuture.get() }
        await mesh.close()
    }

    func testAWrongMeshKeyGivesNoMeshRights() async throws {
        let relay = try await RelayHarness(configure: { $0.meshKey = DERPMeshKey(hex: String(repeating: "ab", count: 32)) })
        defer { relay.stop() }
        let impostor = try await relay.connect(info: DERPClientInfo(meshKey: DERPMeshKey(hex: String(repeating: "cd", count: 32))))
        try await impostor.send(.watchConns)
        try await withDeadline { try await impostor.channel.closeFuture.get() }
    }
}

final class DERPHTTPAdmissionTests: XCTestCase {
    /// A stand-in for warren-control's admission endpoint.
    final class AdmissionEndpoint: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let allowed: String
        let token: String
        private var head: HTTPRequestHead?
        private var body = ByteBuffer()

        init(allowed: String, token: String) {
            self.allowed = allowed
            self.token = token
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var part):
                body.writeBuffer(&part)
            case .end:
                var answer = #"{"Allow":false}"#
                var status = HTTPResponseStatus.ok
                if head?.method != .POST || head?.headers["Authorization"].first != "Bearer \(token)" {
                    status = .unauthorized
                } else if let json = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: String],
                          json["NodePublic"] == allowed, json["Source"] == "127.0.0.1" {
                    answer = #"{"Allow":true}"#
                }
                let headers: HTTPHeaders = ["Content-Type": "application/json", "Content-Length": "\(answer.utf8.count)"]
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: answer)))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }

    func testRelayAsksTheAdmissionURL() async throws {
        var rng = SeededGenerator(seed: 0xAD)
        let good = NodePrivate.generate(using: &rng)
        let endpoint = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdmissionEndpoint(allowed: good.publicKey.description, token: "s3cret"))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        defer { endpoint.close(promise: nil) }
        let url = try XCTUnwrap(URL(string: "http://127.0.0.1:\(endpoint.localAddress?.port ?? 0)/derp/admit"))
        let admission = DERPHTTPAdmission.make(url: url, bearerToken: "s3cret")
        let relay = try await RelayHarness(configure: { $0.admission = admission })
        defer { relay.stop() }

        let client = try await relay.connect(good)
        _ = try await client.ping()
        do {
            _ = try await relay.connect(NodePrivate.generate(using: &rng))
            XCTFail("the admission URL refused this key")
        } catch {}
        await client.close()

        // The wrong token is a 401: refused. An unreachable URL refuses, unless failing open.
        let source = try SocketAddress(ipAddress: "127.0.0.1", port: 1)
        let wrongToken = DERPHTTPAdmission.make(url: url, bearerToken: "nope")
        let answer = await wrongToken(good.publicKey, source)
        XCTAssertFalse(answer)
        let unreachable = try XCTUnwrap(URL(string: "http://127.0.0.1:1/derp/admit"))
        let closed = await DERPHTTPAdmission.make(url: unreachable, timeout: 2)(good.publicKey, source)
        XCTAssertFalse(closed)
        let open = await DERPHTTPAdmission.make(url: unreachable, timeout: 2, failOpen: true)(good.publicKey, source)
        XCTAssertTrue(open)
    }
}
