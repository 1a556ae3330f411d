import XCTest
import WarrenPacket
import WarrenTestSupport
import WireGuardProtocol
import WireGuardUAPI
@testable import WireGuardDevice

/// Bounded fuzzing of the configuration protocol end to end: mutated `get=1` / `set=1` streams go
/// through `UAPIConnection` into a running device (over the in-memory twins), as they would from
/// `/var/run/wireguard/IFACE.sock`. Nothing may trap; a malformed request must change nothing
/// and be answered with a non-zero errno; whatever configuration the accepted requests leave
/// behind must still read back as a `get=1` answer that parses to the same snapshot.
final class UAPIFuzzTests: XCTestCase {
    static let peer1 = "c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038"
    static let peer2 = "4eb32f4a83f88d842563a448cc181bb2c42a637bf12363e2fb2ef594e5965d7d"

    /// Requests in the shapes `wg set` and `wg setconf` send, covering every key of the protocol.
    static let seeds: [String] = [
        "get=1\n\n",
        """
        set=1
        private_key=c809f3e5317e9575c9b5ed78b638b7ce530dabe85ddab614220241801ddf0669
        listen_port=51820
        fwmark=32
        public_key=\(peer1)
        preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
        endpoint=192.0.2.7:51820
        persistent_keepalive_interval=25
        replace_allowed_ips=true
        allowed_ip=10.0.0.0/8
        allowed_ip=fd00::/64
        protocol_version=1
        public_key=\(peer2)
        remove=true

        get=1

        """,
        """
        set=1
        replace_peers=true
        public_key=\(peer2)
        update_only=false
        endpoint=[2001:db8::5]:1234
        allowed_ip=10.192.122.3/32
        allowed_ip=10.192.124.1/24
        allowed_ip=::/0

        """,
        """
        set=1
        public_key=\(peer1)
        update_only=true
        endpoint=[fe80::1%1]:9
        persistent_keepalive_interval=0
        preshared_key=0000000000000000000000000000000000000000000000000000000000000000

        set=1
        private_key=0000000000000000000000000000000000000000000000000000000000000000
        listen_port=0

        get=1

        """,
    ]

    /// The snapshot without counters and handshake times (no traffic flows here, but stay exact).
    static func configuration(of device: WireGuardDevice) -> DeviceSnapshot {
        var snapshot = device.snapshot()
        for i in snapshot.peers.indices {
            snapshot.peers[i].rxBytes = 0
            snapshot.peers[i].txBytes = 0
            snapshot.peers[i].lastHandshakeTimeSec = 0
            snapshot.peers[i].lastHandshakeTimeNsec = 0
        }
        return snapshot
    }

    func testMutatedRequestsIntoARunningDevice() throws {
        let network = MemoryNetwork()
        let device = WireGuardDevice(tun: MemoryTUN(name: "fuzz0"),
                                     bind: MemoryBind(network: network, address: IPAddress("198.51.100.9")!))
        try device.start()
        defer {
            device.stop()
            device.waitUntilStopped()
        }
        var counts = (get: 0, applied: 0, refused: 0, invalid: 0)
        let fuzzer = MutationFuzzer(seeds: Self.seeds.map { Array($0.utf8) }, iterations: 6_000,
                                    maximumLength: 2_048, seed: 0xDE71CE)
        fuzzer.run { bytes in
            var connection = UAPIConnection()
            var actions = connection.receive(bytes)
            if !connection.isClosed { actions += connection.receiveEndOfInput() }
            for case .request(let request) in actions {
                let before = Self.configuration(of: device)
                let answer = String(decoding: request.respond(using: device), as: UTF8.self)
                switch request {
                case .get:
                    counts.get += 1
                    // The answer is a well-formed get response that says what the device holds.
                    do {
                        let parsed = try DeviceSnapshot(parsingGetResponse: answer)
                        XCTAssertEqual(parsed.peers.count, before.peers.count)
                        XCTAssertEqual(parsed.listenPort, before.listenPort)
                    } catch {
                        XCTFail("get answer does not parse: \(error)\n\(answer)")
                    }
                case .invalid(let error):
                    counts.invalid += 1
                    XCTAssertNotEqual(error.wireErrno, 0)
                    XCTAssertEqual(answer, "errno=\(error.wireErrno)\n\n")
                    XCTAssertEqual(Self.configuration(of: device), before, "a malformed request changed the device")
                case .set:
                    if answer == "errno=0\n\n" { counts.applied += 1 } else { counts.refused += 1 }
                    XCTAssertTrue(answer.hasPrefix("errno=") && answer.hasSuffix("\n\n"), answer)
                }
            }
            // Whatever the device now holds reads back and parses to the same configuration.
            let now = Self.configuration(of: device)
            do {
                let again = try DeviceSnapshot(parsingGetResponse: now.getResponse)
                XCTAssertEqual(again, now, "get response does not round-trip")
            } catch {
                XCTFail("the device's own get response does not parse: \(error)\n\(now.getResponse)")
            }
        }
        print("UAPI fuzz outcomes: \(counts)")
        // The fuzzer reached every outcome, so the properties above were exercised.
        XCTAssertGreaterThan(counts.get, 10, "\(counts)")
        XCTAssertGreaterThan(counts.applied, 10, "\(counts)")
        XCTAssertGreaterThan(counts.invalid, 10, "\(counts)")
    }
}
