import XCTest
import Foundation
import WarrenPacket
import WarrenTestSupport
import WireGuardProtocol
@testable import WireGuardDevice

/// Bounded fuzzing of a running device's receive path (datagram screening, the four message
/// types, decryption, the inner IP header check) with mutations of real traffic.
///
/// A relay in the middle (a bind the test drives by hand) carries a real session between two
/// devices and keeps a copy of every datagram: initiation, response, transport data. A third
/// bind, not a peer, then sends thousands of mutations of those datagrams to B. Nothing may trap;
/// B must write nothing to its TUN device (a mutation does not authenticate and an exact copy is
/// a replay), must not move its endpoint for A to the fuzzer's address, and the session must
/// still carry packets both ways afterwards.
final class DatagramFuzzTests: XCTestCase {
    func testMutatedTrafficIntoARunningDevice() throws {
        let pair = try DeviceTests.Pair()
        defer { pair.stop() }
        let relay = MemoryBind(network: pair.network, address: IPAddress("198.51.100.3")!)
        _ = try relay.open(port: 0)
        let fuzzer = MemoryBind(network: pair.network, address: IPAddress("198.51.100.4")!)
        _ = try fuzzer.open(port: 0)
        defer {
            relay.close()
            fuzzer.close()
        }
        let relayEndpoint = try XCTUnwrap(relay.localEndpoint)
        let endpointA = try XCTUnwrap(pair.bindA.localEndpoint)
        let endpointB = try XCTUnwrap(pair.bindB.localEndpoint)
        let keyB = pair.keyB
        pair.a.configure { c in c.setEndpoint(relayEndpoint, of: keyB.publicKey) }

        var captured: [[UInt8]] = []
        /// Forwards datagrams through the relay until `tun` writes a packet; returns it.
        func relayUntilWritten(on tun: MemoryTUN) -> [UInt8]? {
            for _ in 0..<50 {
                if let packet = tun.nextWritten(timeout: .milliseconds(20)) { return packet }
                while let (datagram, source) = relay.nextReceived(timeout: .milliseconds(20)) {
                    captured.append(datagram)
                    try? datagram.withUnsafeBytes { try relay.send($0, to: source == endpointA ? endpointB : endpointA) }
                }
            }
            return nil
        }

        // A real session through the relay, both ways, IPv4 and IPv6.
        let exchanges: [(MemoryTUN, MemoryTUN, [UInt8])] = [
            (pair.tunA, pair.tunB, DeviceTests.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: Array("one".utf8))),
            (pair.tunB, pair.tunA, DeviceTests.ipv4(from: "10.9.0.2", to: "10.9.0.1", payload: Array(repeating: 2, count: 300))),
            (pair.tunA, pair.tunB, DeviceTests.ipv6(from: "fd00::1", to: "fd00::2", payload: [3, 3, 3])),
            (pair.tunB, pair.tunA, DeviceTests.ipv6(from: "fd00::2", to: "fd00::1", payload: Array(repeating: 4, count: 1000))),
        ]
        for (from, to, packet) in exchanges {
            from.inject(packet)
            XCTAssertEqual(relayUntilWritten(on: to), packet)
        }
        let kinds = Set(captured.compactMap { $0.first })
        XCTAssertTrue(kinds.isSuperset(of: [1, 2, 4]), "captured initiation, response and data: \(kinds)")
        XCTAssertEqual(pair.b.status().peers.first?.endpoint, relayEndpoint)

        // The flood of mutations, from a bind that is nobody's peer.
        var sent = 0
        MutationFuzzer(seeds: captured, iterations: 20_000, maximumLength: 1_600, seed: 0xF022).run { bytes in
            bytes.withUnsafeBytes { try? fuzzer.send($0, to: endpointB) }
            sent += 1
        }
        XCTAssertGreaterThanOrEqual(sent, 20_000)

        // Datagrams reach B in order, so once this packet from A arrives, every mutation before
        // it has been handled; it must be the first thing B writes to its TUN device.
        let after = DeviceTests.ipv4(from: "10.9.0.1", to: "10.9.0.2", payload: Array("after".utf8))
        pair.tunA.inject(after)
        XCTAssertEqual(relayUntilWritten(on: pair.tunB), after, "B wrote a packet that came from the fuzzer")
        let back = DeviceTests.ipv4(from: "10.9.0.2", to: "10.9.0.1", payload: Array("back".utf8))
        pair.tunB.inject(back)
        XCTAssertEqual(relayUntilWritten(on: pair.tunA), back)
        let status = pair.b.status()
        XCTAssertEqual(status.peers.count, 1)
        XCTAssertEqual(status.peers.first?.endpoint, relayEndpoint, "unauthenticated datagrams moved B's endpoint for A")
        // What B sent to the fuzzer can only be cookie replies (type 3): it has no session there.
        var repliesToFuzzer = 0
        while let (datagram, _) = fuzzer.nextReceived(timeout: .milliseconds(50)) {
            XCTAssertEqual(datagram.first, 3, "B sent the fuzzer something other than a cookie reply")
            repliesToFuzzer += 1
        }
        print("datagram fuzz: \(captured.count) captured seeds, \(sent) mutations, \(repliesToFuzzer) cookie replies to the fuzzer")
    }

    /// The device's own IP header reader (used on every decrypted packet and every packet read
    /// from TUN) against a naive reference over arrays, on mutations of IPv4 and IPv6 packets
    /// and on every short length.
    func testIPHeaderReaderAgainstReference() {
        func reference(_ b: [UInt8], v4: Int, v6: Int) -> IPAddress? {
            guard let first = b.first else { return nil }
            if first >> 4 == 4, b.count >= 20 {
                return .v4(b[v4..<v4 + 4].reduce(0) { $0 << 8 | UInt32($1) })
            }
            if first >> 4 == 6, b.count >= 40 {
                let hi = b[v6..<v6 + 8].reduce(0) { $0 << 8 | UInt64($1) }
                let lo = b[v6 + 8..<v6 + 16].reduce(0) { $0 << 8 | UInt64($1) }
                return .v6(hi, lo)
            }
            return nil
        }
        func referenceLength(_ b: [UInt8]) -> Int? {
            guard let first = b.first else { return nil }
            if first >> 4 == 4, b.count >= 20 { return Int(b[2]) << 8 | Int(b[3]) }
            if first >> 4 == 6, b.count >= 40 { return 40 + (Int(b[4]) << 8 | Int(b[5])) }
            return nil
        }
        let seeds = [
            DeviceTests.ipv4(from: "10.9.0.1", to: "192.0.2.200", payload: [1, 2, 3]),
            DeviceTests.ipv6(from: "fd00::1", to: "2001:db8::ff", payload: Array(repeating: 9, count: 20)),
        ]
        var inputs: [[UInt8]] = []
        for seed in seeds { for n in 0...seed.count { inputs.append(Array(seed.prefix(n))) } }
        MutationFuzzer(seeds: seeds, iterations: 20_000, maximumLength: 120, seed: 0x1F).run { inputs.append($0) }
        for bytes in inputs {
            bytes.withUnsafeBytes { raw in
                let p = raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
                XCTAssertEqual(IPHeader.source(p, length: raw.count), reference(bytes, v4: 12, v6: 8), "\(bytes)")
                XCTAssertEqual(IPHeader.destination(p, length: raw.count), reference(bytes, v4: 16, v6: 24), "\(bytes)")
                XCTAssertEqual(IPHeader.statedLength(p, length: raw.count), referenceLength(bytes), "\(bytes)")
            }
        }
    }
}
