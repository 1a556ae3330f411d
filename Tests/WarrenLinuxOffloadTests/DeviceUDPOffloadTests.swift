#if os(Linux)
import Foundation
import Glibc
import WarrenLinux
import WarrenPacket
import XCTest

/// The device's UDP layer (WarrenLinux's `UDPSocket`: `sendSegments` for UDP_SEGMENT, `setGRO` and
/// `MessageBatch` for UDP_GRO receives) over the loopback of a namespace the test creates.
final class DeviceUDPOffloadTests: XCTestCase {
    func datagram(_ i: Int, length: Int) -> [UInt8] { (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ i &* 5) } }

    /// Sends `datagrams` (all but the last of equal length) as one UDP_SEGMENT message.
    func sendSegments(_ socket: UDPSocket, _ datagrams: [[UInt8]], to destination: SocketAddress) throws -> UDPSocket.SegmentedSendResult {
        let memory = UnsafeMutableRawPointer.allocate(byteCount: datagrams.reduce(0) { $0 + $1.count }, alignment: 16)
        defer { memory.deallocate() }
        var bases = [UnsafeMutableRawPointer?]()
        var lengths = [Int]()
        var at = 0
        for d in datagrams {
            d.withUnsafeBytes { (memory + at).copyMemory(from: $0.baseAddress!, byteCount: d.count) }
            bases.append(memory + at)
            lengths.append(d.count)
            at += d.count
        }
        return try socket.sendSegments(bases: bases, lengths: lengths, count: datagrams.count,
                                       segmentSize: datagrams[0].count, to: destination)
    }

    /// Receives up to `expected` datagrams (or until a quiet second), splitting GRO buffers.
    func receiveAll(_ socket: UDPSocket, expected: Int, source: IPAddress) throws -> (datagrams: [[UInt8]], messages: Int, coalesced: Int) {
        let slot = 65_536, capacity = 16
        let batch = MessageBatch(capacity: capacity)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: capacity * slot, alignment: 16)
        defer { memory.deallocate() }
        for i in 0..<capacity { batch.setBuffer(i, memory + i * slot, length: slot) }
        var out = [[UInt8]]()
        var messages = 0, coalesced = 0, idle = 0
        while out.count < expected && idle < 20 {
            let n = try socket.receive(batch, count: capacity)
            if n == 0 {
                idle += 1
                _ = try socket.waitReadable(timeoutMilliseconds: 50)
                continue
            }
            for i in 0..<n {
                guard let length = batch.receivedLength(i) else {
                    XCTFail("truncated")
                    continue
                }
                messages += 1
                XCTAssertEqual(batch.source(i)?.address, source)
                let size = batch.coalescedSegmentSize(i)
                let count = UDPSegmentation.datagramCount(length: length, segmentSize: size)
                if count > 1 { coalesced += 1 }
                for k in 0..<count {
                    let r = UDPSegmentation.datagramRange(k, length: length, segmentSize: size)
                    out.append(Array(UnsafeRawBufferPointer(start: memory + i * slot + r.lowerBound, count: r.count)))
                }
                // Re-arm the slot (the kernel shortened its length).
                batch.setBuffer(i, memory + i * slot, length: slot)
            }
        }
        return (out, messages, coalesced)
    }

    /// A UDP_SEGMENT send arrives as separate datagrams at a socket without GRO, and as coalesced
    /// buffers that split back exactly at a socket with GRO; IPv4 and IPv6.
    func testSegmentedSendsRoundTripWithAndWithoutGRO() throws {
        try requireRoot()
        let ns = try TestNamespace("dudp")
        try ns.inside {
            for (family, loopback) in [(IPVersion.v4, IPAddress("127.0.0.1")!), (IPVersion.v6, IPAddress("::1")!)] {
                let sender = try UDPSocket(family: family, port: 0)
                let plain = try UDPSocket(family: family, port: 0)
                let coalescing = try UDPSocket(family: family, port: 0)
                guard sender.supportsSegmentationOffload else { throw XCTSkip("no UDP_SEGMENT") }
                do { try coalescing.setGRO(true) } catch { throw XCTSkip("no UDP_GRO: \(error)") }
                let datagrams = (0..<30).map { datagram($0, length: $0 == 29 ? 211 : 1452) }
                let toPlain = SocketAddress(address: loopback, port: try plain.localPort())
                let toCoalescing = SocketAddress(address: loopback, port: try coalescing.localPort())
                XCTAssertEqual(try sendSegments(sender, datagrams, to: toPlain), .sent)
                XCTAssertEqual(try sendSegments(sender, datagrams, to: toCoalescing), .sent)
                let gotPlain = try receiveAll(plain, expected: 30, source: loopback)
                XCTAssertEqual(gotPlain.datagrams, datagrams, "\(family): separate datagrams without GRO")
                XCTAssertEqual(gotPlain.messages, 30)
                let gotGRO = try receiveAll(coalescing, expected: 30, source: loopback)
                XCTAssertEqual(gotGRO.datagrams, datagrams, "\(family): split back exactly")
                XCTAssertGreaterThan(gotGRO.coalesced, 0, "\(family): at least one buffer held several datagrams")
                XCTAssertLessThan(gotGRO.messages, 30)
            }
        }
    }

    /// A segmented send the kernel cannot take (gso_size above the path MTU of a 1500-byte
    /// loopback) is refused, so the caller can send the datagrams one by one; a send without a
    /// route is reported as dropped.
    func testRefusedSegmentationReportsFalse() throws {
        try requireRoot()
        let ns = try TestNamespace("dudpfb")
        try ns.ip("link", "set", "lo", "mtu", "1500")
        try ns.inside {
            let sender = try UDPSocket(family: .v4, port: 0)
            let receiver = try UDPSocket(family: .v4, port: 0)
            guard sender.supportsSegmentationOffload else { throw XCTSkip("no UDP_SEGMENT") }
            let destination = SocketAddress(address: IPAddress("127.0.0.1")!, port: try receiver.localPort())
            let datagrams = (0..<6).map { datagram($0, length: 1600) }
            XCTAssertEqual(try sendSegments(sender, datagrams, to: destination), .refused)
            let unreachable = SocketAddress(address: IPAddress("192.0.2.1")!, port: 9)
            XCTAssertEqual(try sendSegments(sender, Array(repeating: datagram(0, length: 500), count: 3), to: unreachable), .dropped)
            for d in datagrams { XCTAssertTrue(try d.withUnsafeBytes { try sender.send($0, to: destination) }) }
            XCTAssertEqual(try receiveAll(receiver, expected: 6, source: IPAddress("127.0.0.1")!).datagrams, datagrams)
        }
    }
}
#endif
