#if os(Linux)
import Foundation
import Glibc
import WarrenLinux
import WarrenPacket
import XCTest

/// UDP_SEGMENT sends and UDP_GRO receives over the loopback of a namespace the test creates.
final class UDPOffloadTests: XCTestCase {
    /// A bound, non-blocking IPv4 UDP socket on 127.0.0.1; returns the descriptor and port.
    func udpSocket() throws -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw XCTSkip("socket: errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw XCTSkip("bind: errno \(errno)") }
        var size: Int32 = 4 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        return (fd, UInt16(bigEndian: address.sin_port))
    }

    /// A bound, non-blocking IPv6 UDP socket on ::1; returns the descriptor and port.
    func udp6Socket() throws -> (Int32, UInt16) {
        let fd = socket(AF_INET6, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw XCTSkip("socket: errno \(errno)") }
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr = in6addr_loopback
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw XCTSkip("bind ::1: errno \(errno)") }
        return (fd, UInt16(bigEndian: address.sin6_port))
    }

    func datagram(_ i: Int, length: Int) -> [UInt8] { (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i &* 7) } }

    /// Receives everything waiting on `fd` (up to `expected` datagrams or a quiet second),
    /// splitting GRO-coalesced buffers; returns the datagrams and the number of recvmmsg messages.
    func receiveAll(_ fd: Int32, expected: Int, gro: Bool, source: IPAddress = IPAddress("127.0.0.1")!) throws -> (datagrams: [[UInt8]], messages: Int, coalesced: Int) {
        let batch = UDPOffloadBatch(datagramCapacity: 16)
        let slot = 65536
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 16 * slot, alignment: 16)
        defer { memory.deallocate() }
        for i in 0..<16 { batch.setReceiveBuffer(i, UnsafeMutableRawBufferPointer(start: memory + i * slot, count: slot)) }
        var out = [[UInt8]]()
        var messages = 0
        var coalesced = 0
        var idle = 0
        while out.count < expected && idle < 20 {
            let n = try batch.receive(on: fd, count: 16)
            if n == 0 {
                idle += 1
                usleep(50_000)
                continue
            }
            for i in 0..<n {
                guard let length = batch.receivedLength(i) else {
                    XCTFail("truncated")
                    continue
                }
                messages += 1
                let size = batch.segmentSize(i)
                if !gro { XCTAssertEqual(size, 0, "no GRO without UDP_GRO") }
                let count = UDPSegmentation.datagramCount(length: length, segmentSize: size)
                if count > 1 { coalesced += 1 }
                XCTAssertEqual(batch.source(i)?.address, source)
                for k in 0..<count {
                    let r = UDPSegmentation.datagramRange(k, length: length, segmentSize: size)
                    out.append(Array(UnsafeRawBufferPointer(start: memory + i * slot + r.lowerBound, count: r.count)))
                }
            }
        }
        return (out, messages, coalesced)
    }

    func sendBatch(_ fd: Int32, _ datagrams: [[UInt8]], ports: [UInt16], segmentation: Bool) throws -> Int {
        let batch = UDPOffloadBatch(datagramCapacity: 256, segmentation: segmentation)
        let memory = datagrams.joined().map { $0 }
        return try memory.withUnsafeBytes { raw in
            var at = 0
            for (i, d) in datagrams.enumerated() {
                XCTAssertTrue(batch.append(UnsafeRawBufferPointer(rebasing: raw[at..<at + d.count]),
                                           to: IPAddress("127.0.0.1")!, port: ports[i]))
                at += d.count
            }
            let messages = try batch.send(on: fd)
            XCTAssertEqual(batch.lastDropped, 0)
            return messages
        }
    }

    func testGSOSendArrivesAsSeparateDatagrams() throws {
        try requireRoot()
        let ns = try TestNamespace("gso")
        try ns.inside {
            let (sender, _) = try udpSocket()
            let (a, portA) = try udpSocket()
            let (b, portB) = try udpSocket()
            defer { close(sender); close(a); close(b) }
            guard UDPOffload.supportsSegmentation(fileDescriptor: sender) else { throw XCTSkip("no UDP_SEGMENT") }
            // Runs to A and B: 10 x 1200 + 500 to A, 3 x 1452 to B, 70 x 100 to A (split at 64 segments).
            var datagrams = [[UInt8]](), ports = [UInt16]()
            for i in 0..<10 { datagrams.append(datagram(i, length: 1200)); ports.append(portA) }
            datagrams.append(datagram(10, length: 500)); ports.append(portA)
            for i in 0..<3 { datagrams.append(datagram(100 + i, length: 1452)); ports.append(portB) }
            for i in 0..<70 { datagrams.append(datagram(200 + i, length: 100)); ports.append(portA) }
            let messages = try sendBatch(sender, datagrams, ports: ports, segmentation: true)
            XCTAssertEqual(messages, 4, "11 to A, 3 to B, 64 + 6 to A")
            let gotA = try receiveAll(a, expected: 81, gro: false)
            let gotB = try receiveAll(b, expected: 3, gro: false)
            XCTAssertEqual(gotA.datagrams, zip(datagrams, ports).filter { $0.1 == portA }.map(\.0))
            XCTAssertEqual(gotB.datagrams, Array(datagrams[11..<14]))
            XCTAssertEqual(gotA.messages, 81, "each datagram arrives on its own")
            // Without segmentation: one message per datagram, same result.
            XCTAssertEqual(try sendBatch(sender, Array(datagrams[0..<11]), ports: Array(ports[0..<11]), segmentation: false), 11)
            XCTAssertEqual(try receiveAll(a, expected: 11, gro: false).datagrams, Array(datagrams[0..<11]))
        }
    }

    /// When the kernel refuses a segmented send (here EINVAL: gso_size above the path MTU, as
    /// after a route change), the batch turns segmentation off and sends datagram by datagram.
    func testRefusedSegmentationFallsBackToSingleDatagrams() throws {
        try requireRoot()
        let ns = try TestNamespace("gsofb")
        try ns.ip("link", "set", "lo", "mtu", "1500")
        try ns.inside {
            let (sender, _) = try udpSocket()
            let (receiver, port) = try udpSocket()
            defer { close(sender); close(receiver) }
            guard UDPOffload.supportsSegmentation(fileDescriptor: sender) else { throw XCTSkip("no UDP_SEGMENT") }
            let datagrams = (0..<6).map { datagram($0, length: 1600) }  // fragmented by IP when sent alone
            let batch = UDPOffloadBatch(datagramCapacity: 8)
            let memory = datagrams.joined().map { $0 }
            try memory.withUnsafeBytes { raw in
                for i in 0..<6 {
                    batch.append(UnsafeRawBufferPointer(rebasing: raw[(i * 1600)..<((i + 1) * 1600)]), to: IPAddress("127.0.0.1")!, port: port)
                }
                XCTAssertTrue(batch.segmentationEnabled)
                XCTAssertEqual(try batch.send(on: sender), 6, "one message per datagram after the fallback")
            }
            XCTAssertFalse(batch.segmentationEnabled, "segmentation switched off")
            XCTAssertEqual(batch.lastDropped, 0)
            XCTAssertEqual(try receiveAll(receiver, expected: 6, gro: false).datagrams, datagrams)
        }
    }

    func testIPv6GSOSendAndGROReceive() throws {
        try requireRoot()
        let ns = try TestNamespace("udp6")
        try ns.inside {
            let (sender, _) = try udp6Socket()
            let (plain, plainPort) = try udp6Socket()
            let (coalescing, groPort) = try udp6Socket()
            defer { close(sender); close(plain); close(coalescing) }
            guard UDPOffload.supportsSegmentation(fileDescriptor: sender) else { throw XCTSkip("no UDP_SEGMENT") }
            guard UDPOffload.enableReceiveCoalescing(fileDescriptor: coalescing) else { throw XCTSkip("no UDP_GRO") }
            let datagrams = (0..<20).map { datagram($0, length: $0 == 19 ? 333 : 1280) }
            let batch = UDPOffloadBatch(datagramCapacity: 64)
            let memory = datagrams.joined().map { $0 }
            let messages = try memory.withUnsafeBytes { raw in
                var at = 0
                for (i, d) in datagrams.enumerated() {
                    batch.append(UnsafeRawBufferPointer(rebasing: raw[at..<at + d.count]), to: IPAddress("::1")!,
                                 port: i % 2 == 0 ? plainPort : groPort)
                    batch.append(UnsafeRawBufferPointer(rebasing: raw[at..<at + d.count]), to: IPAddress("::1")!,
                                 port: i % 2 == 0 ? groPort : plainPort)
                    at += d.count
                }
                // Destinations P G G P P G ... G P: the pairs in the middle group, the first and last stand alone.
                XCTAssertEqual(try batch.send(on: sender), 21)
                batch.reset()
                at = 0
                for d in datagrams {
                    batch.append(UnsafeRawBufferPointer(rebasing: raw[at..<at + d.count]), to: IPAddress("::1")!, port: groPort)
                    at += d.count
                }
                return try batch.send(on: sender)
            }
            XCTAssertEqual(messages, 1)
            XCTAssertEqual(try receiveAll(plain, expected: 20, gro: false, source: IPAddress("::1")!).datagrams.count, 20)
            let got = try receiveAll(coalescing, expected: 40, gro: true, source: IPAddress("::1")!)
            XCTAssertEqual(Array(got.datagrams.suffix(20)), datagrams, "the GSO run split back exactly")
            XCTAssertGreaterThan(got.coalesced, 0)
        }
    }

    func testGROReceiveCoalescesAndSplitsBack() throws {
        try requireRoot()
        let ns = try TestNamespace("udpgro")
        try ns.inside {
            let (sender, _) = try udpSocket()
            let (receiver, port) = try udpSocket()
            defer { close(sender); close(receiver) }
            guard UDPOffload.supportsSegmentation(fileDescriptor: sender) else { throw XCTSkip("no UDP_SEGMENT") }
            guard UDPOffload.enableReceiveCoalescing(fileDescriptor: receiver) else { throw XCTSkip("no UDP_GRO") }
            var datagrams = [[UInt8]]()
            for i in 0..<40 { datagrams.append(datagram(i, length: 1420)) }
            datagrams.append(datagram(40, length: 77))
            XCTAssertEqual(try sendBatch(sender, datagrams, ports: [UInt16](repeating: port, count: datagrams.count), segmentation: true), 1)
            let got = try receiveAll(receiver, expected: datagrams.count, gro: true)
            XCTAssertEqual(got.datagrams, datagrams, "split back exactly")
            XCTAssertGreaterThan(got.coalesced, 0, "at least one buffer held several datagrams")
            XCTAssertLessThan(got.messages, datagrams.count)
        }
    }
}
#endif
