// Bounded fuzzing of what arrives on magicsock's socket: mutated disco datagrams (sealed by a real
// peer, so that some mutations get past the magic and the box), STUN responses, WireGuard-looking
// datagrams and noise, from known and unknown sources. Nothing may crash or wedge the receive path:
// afterwards a real disco exchange still works.

import DiscoProtocol
import Foundation
import Logging
import STUNProtocol
import TailscaleKeys
import WarrenMagicsock
import WarrenPacket
import WarrenTailcfg
import WarrenTestSupport
import WireGuardDevice
import XCTest

final class MagicsockFuzzTests: XCTestCase {
    func testRandomAndMutatedDatagramsNeverBreakTheReceivePath() throws {
        var rng = SystemRandomNumberGenerator()
        let network = MemoryNetwork()
        let bindA = MemoryBind(network: network, address: IPAddress("10.3.0.1")!)
        let bindB = MemoryBind(network: network, address: IPAddress("10.3.0.2")!)
        let attacker = MemoryBind(network: network, address: IPAddress("10.3.0.9")!)
        _ = try attacker.open(port: 0)
        let keyA = NodePrivate.generate(using: &rng), keyB = NodePrivate.generate(using: &rng)
        let discoA = DiscoPrivate.generate(using: &rng), discoB = DiscoPrivate.generate(using: &rng)
        var logger = Logger(label: "fuzz")
        logger.logLevel = .critical
        let config = Magicsock.Configuration(port: 0, localAddresses: { [] }, stun: false, tickInterval: .seconds(3600))
        let a = Magicsock(inner: bindA, nodeKey: keyA, discoKey: discoA, configuration: config, logger: logger)
        let b = Magicsock(inner: bindB, nodeKey: keyB, discoKey: discoB, configuration: config, logger: logger)
        _ = try a.open(port: 0)
        _ = try b.open(port: 0)
        defer {
            a.shutdown()
            b.shutdown()
            attacker.close()
        }
        let endpointB = try XCTUnwrap(bindB.localEndpoint)
        let addrB = AddrPort(address: endpointB.address, port: endpointB.port)
        a.setPeers([MagicPeer(nodeKey: keyB.publicKey, discoKey: discoB.publicKey, homeDERP: 0, endpoints: [addrB])])
        b.setPeers([MagicPeer(nodeKey: keyA.publicKey, discoKey: discoA.publicKey, homeDERP: 0, endpoints: [])])

        // Receive loops, as the device runs them.
        let loops = [a, b].map { side in
            Thread {
                let buffers = PacketBuffers(capacity: 16, slotSize: 2048)
                while (try? side.receive(0, into: buffers)) != nil {}
            }
        }
        for loop in loops { loop.start() }

        let nonce = [UInt8](repeating: 7, count: 24)
        let seeds: [[UInt8]] = [
            try DiscoPacket.seal(.ping(DiscoPing(txID: Array(repeating: 1, count: 12), nodeKey: keyB.publicKey)),
                                 from: discoB, to: discoA.publicKey, nonce: nonce),
            try DiscoPacket.seal(.pong(DiscoPong(txID: Array(repeating: 2, count: 12), source: addrB)),
                                 from: discoB, to: discoA.publicKey, nonce: nonce),
            try DiscoPacket.seal(.callMeMaybe([addrB, addrB]), from: discoB, to: discoA.publicKey, nonce: nonce),
            try STUNBinding.response(transactionID: Array(repeating: 3, count: 12), address: addrB.address, port: addrB.port),
            [1, 0, 0, 0] + Array(repeating: 0, count: 144),  // a handshake initiation's shape
            [4, 0, 0, 0] + Array(repeating: 9, count: 60),   // a data message's shape
        ]
        let fuzzer = MutationFuzzer(seeds: seeds, iterations: 4_000, maximumLength: 1500, seed: 0xD15C0)
        var sent = 0
        fuzzer.run { datagram in
            // From the peer's real address half the time (so mutations reach the disco and WireGuard
            // paths for a known source), from a stranger otherwise.
            let from = sent % 2 == 0 ? bindB : attacker
            _ = datagram.withUnsafeBytes { try? from.send($0, to: bindA.localEndpoint!) }
            sent += 1
            if sent % 200 == 0 { usleep(2_000) }  // let the receiver keep up (the queue drops when full)
        }

        // The receive path still works: a real ping from a gets b's pong straight back.
        let deadline = Date().addingTimeInterval(10)
        var ok = false
        while Date() < deadline && !ok {
            let semaphore = DispatchSemaphore(value: 0)
            let box = ResultBox()
            Task {
                box.value = await a.ping(keyB.publicKey, timeout: .milliseconds(500))
                semaphore.signal()
            }
            semaphore.wait()
            ok = box.value?.endpoint != nil
        }
        XCTAssertTrue(ok, "no pong from b after the fuzzing")
        a.close()
        b.close()
        while !loops.allSatisfy(\.isFinished) { usleep(1_000) }
    }
}

final class ResultBox: @unchecked Sendable {
    var value: DiscoPingResult?
}
