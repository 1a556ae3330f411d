#if os(Linux)
import Foundation
import Glibc
import WarrenLinux
import WarrenPacket
import WireGuardDevice
import XCTest

/// The device's UDP bind (`LinuxBind`) in a namespace the test creates: runs of datagrams to one
/// endpoint go out as UDP_SEGMENT messages, refusals fall back to single datagrams, UDP_GRO
/// buffers are split back into one datagram per slot, and dropped sends are reported.
final class LinuxBindTests: XCTestCase {
    func datagram(_ i: Int, length: Int) -> [UInt8] { (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i &* 7) } }

    /// Puts `datagrams` into device buffers (at a headroom, as the outbound path leaves them).
    func buffers(_ datagrams: [[UInt8]], to endpoints: [WireGuardEndpoint]) -> PacketBuffers {
        let buffers = PacketBuffers(capacity: max(datagrams.count, 1), slotSize: 2048)
        for (i, d) in datagrams.enumerated() {
            d.withUnsafeBytes { _ = buffers.store($0, in: i, at: 16) }
            buffers.endpoints[i] = endpoints[i]
        }
        return buffers
    }

    /// Receives up to `expected` datagrams on a plain socket (or until a quiet second).
    func receiveAll(_ socket: UDPSocket, expected: Int) throws -> [[UInt8]] {
        let batch = MessageBatch(capacity: 16)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 16 * 65_536, alignment: 16)
        defer { memory.deallocate() }
        var out = [[UInt8]]()
        var idle = 0
        while out.count < expected && idle < 20 {
            for i in 0..<16 { batch.setBuffer(i, memory + i * 65_536, length: 65_536) }
            let n = try socket.receive(batch, count: 16)
            if n == 0 {
                idle += 1
                _ = try socket.waitReadable(timeoutMilliseconds: 50)
                continue
            }
            for i in 0..<n {
                let length = try XCTUnwrap(batch.receivedLength(i))
                XCTAssertEqual(batch.coalescedSegmentSize(i), 0, "a socket without UDP_GRO gets single datagrams")
                out.append(Array(UnsafeRawBufferPointer(start: memory + i * 65_536, count: length)))
            }
        }
        return out
    }

    func testRunsGoOutAsSegmentedMessages() throws {
        try requireRoot()
        let ns = try TestNamespace("bgso")
        try ns.inside {
            let bind = LinuxBind()
            _ = try bind.open(port: 0)
            defer { bind.close() }
            let a = try UDPSocket(family: .v4, port: 0), b = try UDPSocket(family: .v4, port: 0)
            guard a.supportsSegmentationOffload else { throw XCTSkip("no UDP_SEGMENT") }
            let toA = WireGuardEndpoint(address: IPAddress("127.0.0.1")!, port: try a.localPort())
            let toB = WireGuardEndpoint(address: IPAddress("127.0.0.1")!, port: try b.localPort())
            // 10 x 1200 + 500 to A, 3 x 1452 to B, 70 x 100 to A (split at 64 segments).
            var datagrams = [[UInt8]](), endpoints = [WireGuardEndpoint]()
            for i in 0..<10 { datagrams.append(datagram(i, length: 1200)); endpoints.append(toA) }
            datagrams.append(datagram(10, length: 500)); endpoints.append(toA)
            for i in 0..<3 { datagrams.append(datagram(100 + i, length: 1452)); endpoints.append(toB) }
            for i in 0..<70 { datagrams.append(datagram(200 + i, length: 100)); endpoints.append(toA) }
            let before = try ns.packetCounters("lo").tx
            let slots = buffers(datagrams, to: endpoints)
            try bind.send(slots, count: datagrams.count)
            XCTAssertEqual(try ns.packetCounters("lo").tx - before, 4, "11 to A, 3 to B, 64 + 6 to A: four messages")
            for i in 0..<datagrams.count { XCTAssertEqual(slots.lengths[i], datagrams[i].count, "nothing dropped") }
            XCTAssertEqual(try receiveAll(a, expected: 81), zip(datagrams, endpoints).filter { $0.1 == toA }.map(\.0))
            XCTAssertEqual(try receiveAll(b, expected: 3), Array(datagrams[11..<14]))
            // Without segmentation: one message per datagram, same datagrams.
            let plain = LinuxBind(segmentationOffload: false)
            _ = try plain.open(port: 0)
            defer { plain.close() }
            let before2 = try ns.packetCounters("lo").tx
            try plain.send(buffers(Array(datagrams[0..<11]), to: Array(endpoints[0..<11])), count: 11)
            XCTAssertEqual(try ns.packetCounters("lo").tx - before2, 11)
            XCTAssertEqual(try receiveAll(a, expected: 11), Array(datagrams[0..<11]))
        }
    }

    /// A run the kernel will not segment (datagrams above the path MTU, which need IP fragments)
    /// goes out datagram by datagram.
    func testRefusedSegmentationFallsBackToSingleDatagrams() throws {
        try requireRoot()
        let ns = try TestNamespace("bgsofb")
        try ns.ip("link", "set", "lo", "mtu", "1500")
        try ns.inside {
            let bind = LinuxBind()
            _ = try bind.open(port: 0)
            defer { bind.close() }
            let receiver = try UDPSocket(family: .v4, port: 0)
            guard receiver.supportsSegmentationOffload else { throw XCTSkip("no UDP_SEGMENT") }
            let to = WireGuardEndpoint(address: IPAddress("127.0.0.1")!, port: try receiver.localPort())
            let datagrams = (0..<6).map { datagram($0, length: 1600) }
            let slots = buffers(datagrams, to: Array(repeating: to, count: 6))
            try bind.send(slots, count: 6)
            for i in 0..<6 { XCTAssertEqual(slots.lengths[i], 1600, "sent, not dropped") }
            XCTAssertEqual(try receiveAll(receiver, expected: 6), datagrams)
        }
    }

    /// Datagrams that cannot go anywhere (no route) have their slot length set to 0, so that the
    /// device does not count them as sent; the others in the batch go out.
    func testDroppedSendsAreReported() throws {
        try requireRoot()
        let ns = try TestNamespace("bdrop")
        try ns.inside {
            for segmentation in [true, false] {
                let bind = LinuxBind(segmentationOffload: segmentation)
                _ = try bind.open(port: 0)
                defer { bind.close() }
                let receiver = try UDPSocket(family: .v4, port: 0)
                let reachable = WireGuardEndpoint(address: IPAddress("127.0.0.1")!, port: try receiver.localPort())
                let nowhere = WireGuardEndpoint(address: IPAddress("192.0.2.1")!, port: 9)
                let nowhere6 = WireGuardEndpoint(address: IPAddress("2001:db8::1")!, port: 9)
                let endpoints = [reachable, nowhere, nowhere, nowhere, reachable, reachable, nowhere6, reachable]
                let datagrams = endpoints.indices.map { datagram($0, length: 300) }
                let slots = buffers(datagrams, to: endpoints)
                try bind.send(slots, count: datagrams.count)
                XCTAssertEqual((0..<8).map { slots.lengths[$0] > 0 }, endpoints.map { $0 == reachable }, "segmentation \(segmentation)")
                XCTAssertEqual(try receiveAll(receiver, expected: 4), [0, 4, 5, 7].map { datagrams[$0] })
                XCTAssertFalse(try datagrams[0].withUnsafeBytes { try bind.send($0, to: nowhere) })
                XCTAssertTrue(try datagrams[0].withUnsafeBytes { try bind.send($0, to: reachable) })
                XCTAssertEqual(try receiveAll(receiver, expected: 1), [datagrams[0]])
            }
        }
    }

    /// A UDP_SEGMENT run arriving at the bind (UDP_GRO on) is split back into one datagram per
    /// slot, with its source; IPv4 and IPv6.
    func testGROReceivesSplitIntoSlots() throws {
        try requireRoot()
        let ns = try TestNamespace("bgro")
        try ns.inside {
            let bind = LinuxBind()
            let port = try bind.open(port: 0)
            defer { bind.close() }
            for (receiver, family, loopback) in [(0, IPVersion.v4, IPAddress("127.0.0.1")!), (1, .v6, IPAddress("::1")!)] {
                let sender = try UDPSocket(family: family, port: 0)
                guard sender.supportsSegmentationOffload else { throw XCTSkip("no UDP_SEGMENT") }
                let datagrams = (0..<40).map { datagram($0, length: $0 == 39 ? 77 : 1420) }
                let memory = datagrams.joined().map { $0 }
                let result = try memory.withUnsafeBytes { raw -> UDPSocket.SegmentedSendResult in
                    var bases = [UnsafeMutableRawPointer?](), lengths = [Int]()
                    var at = 0
                    for d in datagrams {
                        bases.append(UnsafeMutableRawPointer(mutating: raw.baseAddress! + at))
                        lengths.append(d.count)
                        at += d.count
                    }
                    return try sender.sendSegments(bases: bases, lengths: lengths, count: datagrams.count, segmentSize: 1420,
                                                   to: SocketAddress(address: loopback, port: port))
                }
                XCTAssertEqual(result, .sent)
                let slots = PacketBuffers(capacity: 16, slotSize: WireGuardDeviceConstants.slotSize)
                var got = [[UInt8]]()
                let source = WireGuardEndpoint(address: loopback, port: try sender.localPort())
                while got.count < datagrams.count {
                    let n = try bind.receive(receiver, into: slots)
                    XCTAssertLessThanOrEqual(n, 16)
                    for i in 0..<n {
                        XCTAssertEqual(slots.endpoints[i], source)
                        got.append(Array(UnsafeRawBufferPointer(slots.packet(i))))
                    }
                }
                XCTAssertEqual(got, datagrams, "\(family): split back exactly, in order")
            }
        }
    }
}
#endif
