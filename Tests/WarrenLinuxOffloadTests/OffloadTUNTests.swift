#if os(Linux)
import Foundation
import Glibc
import WarrenLinux
import WarrenPacket
import XCTest

/// The device's TUN (`TUNDevice`) with IFF_VNET_HDR and TSO in a namespace the test creates, with the test
/// playing the remote TCP end through the device.
final class OffloadTUNTests: XCTestCase {
    /// Whether the kernel took TUN_F_USO4/6 in the last `makeTUN`.
    var usoAccepted = false

    /// The largest read: a virtio-net header and a 64 KB super-packet.
    static let maximumReadLength = VirtioNetHeader.size + 65_535 + 40

    /// The device's TUN (WarrenLinux's `TUNDevice`) with IFF_VNET_HDR, checksum offload, TSO and,
    /// where the kernel has it, USO.
    func makeTUN(_ ns: TestNamespace) throws -> TUNDevice {
        let tun = try ns.inside { try TUNDevice(name: "woftun0", virtioHeader: true) }
        XCTAssertTrue(tun.hasVirtioHeader)
        try tun.setOffloads(checksum: true, tcpSegmentation: true)
        usoAccepted = (try? tun.setOffloads(checksum: true, tcpSegmentation: true, udpSegmentation: true)) != nil
        try ns.ip("addr", "add", "10.77.0.1/24", "dev", "woftun0")
        try ns.ip("-6", "addr", "add", "fd77::1/64", "dev", "woftun0", "nodad")
        try ns.ip("link", "set", "woftun0", "mtu", "1420", "up")
        return tun
    }

    /// Reads one header + packet (waiting up to `timeout` ms); returns the header and the packet
    /// with any checksum the kernel left undone finished.
    func readPacket(_ tun: TUNDevice, _ buffer: UnsafeMutableRawBufferPointer, timeout: Int32 = 3000) throws -> (VirtioNetHeader, [UInt8])? {
        guard let n = try tun.read(into: buffer) ?? (try tun.waitReadable(timeoutMilliseconds: timeout) ? tun.read(into: buffer) : nil)
        else { return nil }
        let header = try VirtioNetHeader(decoding: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        return (header, Array(buffer[VirtioNetHeader.size..<n]))
    }

    func write(_ tun: TUNDevice, _ packet: [UInt8]) throws {
        let bytes = [UInt8](repeating: 0, count: VirtioNetHeader.size) + packet
        XCTAssertTrue(try bytes.withUnsafeBytes { try tun.write($0) }, "kernel refused a plain packet")
    }

    static func pattern(_ i: Int) -> UInt8 { UInt8((i * 7 + 3) % 251) }

    /// The kernel hands over TCP super-packets (gso_type TCPV4, up to 64 KB); the segmenter cuts
    /// them into packets of at most the MTU with valid checksums, carrying exactly the bytes sent.
    func testKernelSuperPacketsSegmentIntoValidPackets() throws {
        try kernelSuperPacketsSegmentIntoValidPackets(.v4)
    }

    func testKernelIPv6SuperPacketsSegmentIntoValidPackets() throws {
        try kernelSuperPacketsSegmentIntoValidPackets(.v6)
    }

    func kernelSuperPacketsSegmentIntoValidPackets(_ f: Family) throws {
        try requireRoot()
        let ns = try TestNamespace("tso")
        let tun = try makeTUN(ns)
        let total = 400_000
        let (client, _) = try ns.python("""
        import socket
        s = socket.create_connection(('\(f.peerText)', 9000), timeout=5)
        s.settimeout(4)
        try:
            s.sendall(bytes((i * 7 + 3) % 251 for i in range(\(total))))
            s.shutdown(socket.SHUT_WR)
            s.recv(1)
        except Exception:
            pass
        """)
        defer {
            if client.isRunning { client.terminate() }
            client.waitUntilExit()
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.maximumReadLength, alignment: 16)
        defer { buffer.deallocate() }
        let slotSize = 2048
        let slots = UnsafeMutableRawPointer.allocate(byteCount: 64 * slotSize, alignment: 16)
        defer { slots.deallocate() }

        var clientISN: UInt32 = 0
        let myISN: UInt32 = 5000
        var received = [UInt8](repeating: 0, count: total)
        var next = 0  // bytes received in order
        var superPackets = 0
        var largestSegments = 0
        var segmentsChecked = 0
        var sawFIN = false
        let deadline = Date().addingTimeInterval(15)
        while !sawFIN && Date() < deadline {
            guard let (header, packet) = try readPacket(tun, buffer) else { break }
            guard f.isTCP(packet), get16(packet, f.t + 2) == 9000 else { continue }  // router solicitations, ...
            let flags = packet[f.t + 13]
            if flags & 0x02 != 0 {  // SYN: answer with SYN-ACK, MSS 1360
                clientISN = get32(packet, f.t + 4)
                try write(tun, f.fromPeer(9000, get16(packet, f.t), seq: myISN, ack: clientISN &+ 1,
                                          flags: 0x12, options: [2, 4, 0x05, 0x50]))
                continue
            }
            var lengths = [Int]()
            let n = try packet.withUnsafeBytes { raw in
                try GSOSegmenter.segment(raw, header: header) { index, length in
                    guard index < 64, length <= slotSize else { return nil }
                    lengths.append(length)
                    return slots + index * slotSize
                }
            }
            if header.gsoType == (f.v6 ? .tcpV6 : .tcpV4) && n > 1 { superPackets += 1 }
            largestSegments = max(largestSegments, n)
            for i in 0..<n {
                let s = Array(UnsafeRawBufferPointer(start: slots + i * slotSize, count: lengths[i]))
                XCTAssertTrue(checksumsValid(s), "segment checksums")
                XCTAssertLessThanOrEqual(s.count, 1420)
                segmentsChecked += 1
                let payload = Array(s[(f.t + Int(s[f.t + 12] >> 4) * 4)...])
                let offset = Int(get32(s, f.t + 4) &- clientISN &- 1)
                if s[f.t + 13] & 0x01 != 0 { sawFIN = true }
                if offset == next && offset + payload.count <= total {
                    received.replaceSubrange(offset..<offset + payload.count, with: payload)
                    next += payload.count
                }
            }
            // Acknowledge what arrived in order, so the window opens and larger bursts follow.
            try write(tun, f.fromPeer(9000, get16(packet, f.t), seq: myISN &+ 1,
                                      ack: clientISN &+ 1 &+ UInt32(next) &+ (sawFIN ? 1 : 0), flags: 0x10))
        }
        print("kernel -> TUN (\(f)): \(superPackets) TSO super-packets, up to \(largestSegments) segments each, \(segmentsChecked) segments checked")
        XCTAssertEqual(next, total, "all bytes arrived in order")
        XCTAssertTrue(received.enumerated().allSatisfy { $0.element == Self.pattern($0.offset) }, "bytes as sent")
        XCTAssertGreaterThan(superPackets, 0, "the kernel sent TSO super-packets")
        XCTAssertGreaterThan(largestSegments, 2)
        XCTAssertGreaterThan(segmentsChecked, total / 1380 - 1)
    }

    /// With USO (Linux 6.2+), a UDP_SEGMENT send routed into the TUN arrives as one UDP_L4
    /// super-packet; the segmenter turns it into the datagrams the application meant.
    func testKernelUDPSuperPacketSegmentsIntoDatagrams() throws {
        try requireRoot()
        let ns = try TestNamespace("uso")
        let tun = try makeTUN(ns)
        guard usoAccepted else { throw XCTSkip("kernel without TUN_F_USO4/USO6") }
        let (sender, _) = try ns.python("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(17, 103, 1200)
        s.sendto(bytes((i * 7 + 3) % 251 for i in range(5000)), ('10.77.0.2', 9999))
        """)
        sender.waitUntilExit()
        XCTAssertEqual(sender.terminationStatus, 0)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.maximumReadLength, alignment: 16)
        defer { buffer.deallocate() }
        var datagrams = [[UInt8]]()
        var superPackets = 0
        while datagrams.count < 5, let (header, packet) = try readPacket(tun, buffer, timeout: 3000) {
            guard packet.count >= 28, packet[0] == 0x45, packet[9] == 17, get16(packet, 22) == 9999 else { continue }
            if header.gsoType == .udpL4 { superPackets += 1 }
            var lengths = [Int]()
            let slots = UnsafeMutableRawPointer.allocate(byteCount: 8 * 2048, alignment: 16)
            defer { slots.deallocate() }
            let n = try packet.withUnsafeBytes { raw in
                try GSOSegmenter.segment(raw, header: header) { index, length in
                    guard index < 8, length <= 2048 else { return nil }
                    lengths.append(length)
                    return slots + index * 2048
                }
            }
            for i in 0..<n {
                let d = Array(UnsafeRawBufferPointer(start: slots + i * 2048, count: lengths[i]))
                XCTAssertTrue(checksumsValid(d), "datagram \(i) checksums")
                XCTAssertEqual(get16(d, 24), d.count - 20, "UDP length")
                datagrams.append(Array(d[28...]))
            }
        }
        print("kernel -> TUN: \(superPackets) UDP_L4 super-packets for \(datagrams.count) datagrams")
        XCTAssertEqual(superPackets, 1)
        XCTAssertEqual(datagrams.map(\.count), [1200, 1200, 1200, 1200, 200])
        XCTAssertEqual(Array(datagrams.joined()), (0..<5000).map(Self.pattern))
    }

    /// Segments coalesced by PacketCoalescer and written as super-packets are accepted by the
    /// kernel's TCP: a listening socket receives every byte, in order.
    func testCoalescedSuperPacketsAreAcceptedByTheKernel() throws {
        try coalescedSuperPacketsAreAcceptedByTheKernel(.v4)
    }

    func testCoalescedIPv6SuperPacketsAreAcceptedByTheKernel() throws {
        try coalescedSuperPacketsAreAcceptedByTheKernel(.v6)
    }

    func coalescedSuperPacketsAreAcceptedByTheKernel(_ f: Family) throws {
        try requireRoot()
        let ns = try TestNamespace("gro")
        let tun = try makeTUN(ns)
        let segments = 400
        let mss = f.v6 ? 1360 : 1380
        let total = segments * mss - 777
        let (server, output) = try ns.python("""
        import socket, sys
        l = socket.socket(socket.AF_INET6 if \(f.v6 ? "True" : "False") else socket.AF_INET)
        l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(('\(f.localText)', 9001)); l.listen(1); l.settimeout(10)
        print('ready', flush=True)
        c, _ = l.accept(); c.settimeout(10)
        data = bytearray()
        while True:
            b = c.recv(1 << 20)
            if not b: break
            data += b
        print(len(data), bytes(data) == bytes((i * 7 + 3) % 251 for i in range(len(data))), flush=True)
        """)
        defer {
            if server.isRunning { server.terminate() }
            server.waitUntilExit()
        }
        // Wait for the listener.
        var ready = Data()
        while !String(decoding: ready, as: UTF8.self).contains("ready") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return XCTFail("server did not start") }
            ready += chunk
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.maximumReadLength, alignment: 16)
        defer { buffer.deallocate() }

        let myISN: UInt32 = 0x7FFF_FFF0
        try write(tun, f.fromPeer(40000, 9001, seq: myISN, ack: 0, flags: 0x02, options: [2, 4, 0x05, 0x64]))
        var serverISN: UInt32? = nil
        var acked: UInt32 = 0
        var window = 0
        func drain(timeout: Int32) throws {
            while let (header, packet) = try readPacket(tun, buffer, timeout: timeout) {
                var p = packet
                try p.withUnsafeMutableBytes { try GSOSegmenter.completeChecksum($0, header: header) }
                guard f.isTCP(p), get16(p, f.t) == 9001 else { continue }
                XCTAssertTrue(checksumsValid(p))
                if p[f.t + 13] & 0x12 == 0x12 { serverISN = get32(p, f.t + 4) }
                if p[f.t + 13] & 0x10 != 0 {
                    acked = get32(p, f.t + 8)
                    window = get16(p, f.t + 14)
                }
                if timeout > 0 { return }
            }
        }
        try drain(timeout: 3000)
        guard let serverISN else { return XCTFail("no SYN-ACK") }
        try write(tun, f.fromPeer(40000, 9001, seq: myISN &+ 1, ack: serverISN &+ 1, flags: 0x10))

        let coalescer = PacketCoalescer(maximumPackets: 64)
        var sent = 0
        var outputs = 0
        var superPackets = 0
        var id = 1
        while sent < total {
            // Send up to 32 segments within the advertised window, as one coalescing batch.
            let inFlightLimit = max(window, mss)
            var batch = [[UInt8]]()
            var offset = sent
            while batch.count < 32 && offset < total && offset - Int(acked &- myISN &- 1) + mss <= inFlightLimit {
                let size = min(mss, total - offset)
                let payload = (offset..<offset + size).map(Self.pattern)
                batch.append(f.fromPeer(40000, 9001, seq: myISN &+ 1 &+ UInt32(offset), ack: serverISN &+ 1,
                                        flags: offset + size == total ? 0x18 : 0x10, payload: payload, id: id))
                id += 1
                offset += size
            }
            if batch.isEmpty {
                try drain(timeout: 2000)
                continue
            }
            coalescer.reset()
            let memory = batch.joined().map { $0 }
            try memory.withUnsafeBytes { raw in
                var at = 0
                for p in batch {
                    XCTAssertTrue(coalescer.add(UnsafeRawBufferPointer(rebasing: raw[at..<at + p.count])))
                    at += p.count
                }
                coalescer.finish()
                for i in 0..<coalescer.outputCount {
                    XCTAssertTrue(try tun.write(coalescer.output(i)), "kernel refused output \(i)")
                }
            }
            outputs += coalescer.outputCount
            superPackets += coalescer.coalescedOutputs
            sent = offset
            // Wait for the acknowledgment of this batch.
            let deadline = Date().addingTimeInterval(5)
            while Int(acked &- myISN &- 1) < sent && Date() < deadline { try drain(timeout: 500) }
            XCTAssertEqual(Int(acked &- myISN &- 1), sent, "acknowledged")
            if Int(acked &- myISN &- 1) != sent { break }
        }
        try write(tun, f.fromPeer(40000, 9001, seq: myISN &+ 1 &+ UInt32(total), ack: serverISN &+ 1, flags: 0x11))
        let result = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(result.trimmingCharacters(in: .whitespacesAndNewlines), "\(total) True")
        print("TUN -> kernel (\(f)): \(segments) segments written as \(outputs) writes (\(superPackets) super-packets)")
        XCTAssertGreaterThan(superPackets, 0)
        XCTAssertLessThan(outputs, segments / 4, "writes: \(outputs) for \(segments) segments")
    }
}
#endif
