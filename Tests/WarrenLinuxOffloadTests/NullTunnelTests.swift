#if os(Linux)
import CWarrenOffload
import Foundation
import Glibc
import Synchronization
import WarrenLinux
import WarrenPacket
import XCTest

/// The whole offload path as the device would run it, minus the cipher: two namespaces joined by
/// a veth pair, a TUN in each, and per side a TUN -> UDP thread (read super-packets, segment,
/// frame each segment as a transport message would be, UDP GSO send) and a UDP -> TUN thread
/// (UDP GRO receive, split, unframe, coalesce, write). A TCP transfer runs across it.
final class NullTunnelTests: XCTestCase {
    struct Stats {
        var tunReads = 0, segments = 0, udpMessagesSent = 0, datagramsSent = 0
        var udpMessagesReceived = 0, datagramsReceived = 0, tunWrites = 0, superPacketsWritten = 0
    }

    final class Side: @unchecked Sendable {
        let tun: OffloadTUNDevice
        let socket: Int32
        let peer: IPAddress
        let stop = Atomic<Bool>(false)
        let stats = Mutex(Stats())

        init(tun: OffloadTUNDevice, socket: Int32, peer: IPAddress) {
            self.tun = tun
            self.socket = socket
            self.peer = peer
        }

        /// TUN -> segment -> frame (16-byte header, padding to 16, 16-byte tag) -> UDP GSO.
        func outbound() {
            let capacity = 128, slot = 2048, headroom = 16
            let slots = UnsafeMutableRawPointer.allocate(byteCount: capacity * slot, alignment: 64)
            let lengths = UnsafeMutablePointer<Int>.allocate(capacity: capacity)
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: OffloadTUNDevice.maximumReadLength, alignment: 64)
            defer { slots.deallocate(); lengths.deallocate(); scratch.deallocate() }
            let batch = UDPOffloadBatch(datagramCapacity: capacity)
            var pending = 0
            while !stop.load(ordering: .relaxed) {
                var count = 0
                var reads = 0
                while count < capacity {
                    let n: Int
                    if pending > 0 {
                        n = pending
                        pending = 0
                    } else {
                        guard let r = try? tun.read(into: scratch) else { break }
                        n = r
                        reads += 1
                    }
                    guard n > VirtioNetHeader.size, let header = try? VirtioNetHeader(decoding: UnsafeRawBufferPointer(scratch)) else { continue }
                    let packet = UnsafeRawBufferPointer(rebasing: scratch[VirtioNetHeader.size..<n])
                    guard let need = try? GSOSegmenter.segmentCount(packet, header: header) else { continue }
                    if count + need > capacity {
                        pending = n
                        break
                    }
                    count += (try? GSOSegmenter.segment(packet, header: header) { i, length in
                        guard length <= 1500 else { return nil }
                        lengths[count + i] = length
                        return slots + (count + i) * slot + headroom
                    }) ?? 0
                }
                if count == 0 {
                    _ = try? tun.waitReadable(timeoutMilliseconds: 50)
                    continue
                }
                batch.reset()
                for i in 0..<count {
                    let padded = max(lengths[i], min((lengths[i] + 15) & ~15, 1420))
                    batch.append(UnsafeRawBufferPointer(start: slots + i * slot, count: headroom + padded + 16), to: peer, port: 51000)
                }
                let messages = (try? batch.send(on: socket)) ?? 0
                stats.withLock {
                    $0.tunReads += reads
                    $0.segments += count
                    $0.udpMessagesSent += messages
                    $0.datagramsSent += count
                }
            }
        }

        /// UDP GRO -> split -> unframe -> coalesce -> TUN.
        func inbound() {
            let messages = 16, slot = 65536
            let memory = UnsafeMutableRawPointer.allocate(byteCount: messages * slot, alignment: 64)
            defer { memory.deallocate() }
            let batch = UDPOffloadBatch(datagramCapacity: messages)
            for i in 0..<messages { batch.setReceiveBuffer(i, UnsafeMutableRawBufferPointer(start: memory + i * slot, count: slot)) }
            let coalescer = TCPCoalescer(maximumPackets: 1024, maximumPacketLength: 1500)
            var writes = 0, superPackets = 0
            func flush() {
                coalescer.finish()
                for o in 0..<coalescer.outputCount { _ = try? tun.write(coalescer.output(o)) }
                writes += coalescer.outputCount
                superPackets += coalescer.coalescedOutputs
                coalescer.reset()
            }
            while !stop.load(ordering: .relaxed) {
                guard let n = try? batch.receive(on: socket, count: messages), n > 0 else {
                    _ = cwarren_offload_poll_in(socket, 50)
                    continue
                }
                var datagrams = 0
                writes = 0
                superPackets = 0
                coalescer.reset()
                for i in 0..<n {
                    guard let length = batch.receivedLength(i) else { continue }
                    let size = batch.segmentSize(i)
                    for k in 0..<UDPSegmentation.datagramCount(length: length, segmentSize: size) {
                        datagrams += 1
                        let r = UDPSegmentation.datagramRange(k, length: length, segmentSize: size)
                        guard r.count > 52 else { continue }
                        let inner = UnsafeRawBufferPointer(start: memory + i * slot + r.lowerBound + 16, count: r.count - 32)
                        let ipLength = inner[0] >> 4 == 6 ? 40 + (Int(inner[4]) << 8 | Int(inner[5])) : Int(inner[2]) << 8 | Int(inner[3])
                        guard ipLength <= inner.count else { continue }
                        let packet = UnsafeRawBufferPointer(rebasing: inner[0..<ipLength])
                        if !coalescer.add(packet) {
                            flush()
                            coalescer.add(packet)
                        }
                    }
                }
                flush()
                stats.withLock {
                    $0.udpMessagesReceived += n
                    $0.datagramsReceived += datagrams
                    $0.tunWrites += writes
                    $0.superPacketsWritten += superPackets
                }
            }
        }
    }

    func udpSocket(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        let ok = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard fd >= 0, ok else { throw XCTSkip("UDP socket: errno \(errno)") }
        var size: Int32 = 7 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(4))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(4))
        return fd
    }

    func testTCPTransferThroughAnOffloadedNullTunnel() throws {
        try requireRoot()
        let a = try TestNamespace("nta")
        let b = try TestNamespace("ntb")
        try WarrenLinuxOffloadTests.run("/usr/sbin/ip", "-n", a.name, "link", "add", "wofnva", "type", "veth", "peer", "name", "wofnvb", "netns", b.name)
        try a.ip("addr", "add", "192.168.198.1/24", "dev", "wofnva")
        try b.ip("addr", "add", "192.168.198.2/24", "dev", "wofnvb")
        try a.ip("link", "set", "wofnva", "up")
        try b.ip("link", "set", "wofnvb", "up")
        let tunA = try a.inside { try OffloadTUNDevice(name: "wofnt0") }
        let tunB = try b.inside { try OffloadTUNDevice(name: "wofnt0") }
        let udpA = try a.inside { try udpSocket(port: 51000) }
        let udpB = try b.inside { try udpSocket(port: 51000) }
        defer { close(udpA); close(udpB) }
        XCTAssertTrue(UDPOffload.enableReceiveCoalescing(fileDescriptor: udpA))
        XCTAssertTrue(UDPOffload.enableReceiveCoalescing(fileDescriptor: udpB))
        for (ns, address) in [(a, "10.198.0.1/24"), (b, "10.198.0.2/24")] {
            try ns.ip("addr", "add", address, "dev", "wofnt0")
            try ns.ip("link", "set", "wofnt0", "mtu", "1420", "up")
        }
        let sideA = Side(tun: tunA, socket: udpA, peer: IPAddress("192.168.198.2")!)
        let sideB = Side(tun: tunB, socket: udpB, peer: IPAddress("192.168.198.1")!)
        let finished = DispatchSemaphore(value: 0)
        var running = [Thread]()
        for (side, outbound) in [(sideA, true), (sideA, false), (sideB, true), (sideB, false)] {
            let t = Thread {
                if outbound { side.outbound() } else { side.inbound() }
                finished.signal()
            }
            t.start()
            running.append(t)
        }
        defer {
            sideA.stop.store(true, ordering: .relaxed)
            sideB.stop.store(true, ordering: .relaxed)
            for _ in running { finished.wait() }
        }
        let total = 30_000_000
        let (server, output) = try b.python("""
        import socket, hashlib
        l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        l.bind(('10.198.0.2', 9002)); l.listen(1); l.settimeout(20)
        print('ready', flush=True)
        c, _ = l.accept(); c.settimeout(20)
        h = hashlib.sha256(); n = 0
        while True:
            b = c.recv(1 << 20)
            if not b: break
            h.update(b); n += len(b)
        print(n, h.hexdigest(), flush=True)
        """)
        defer {
            if server.isRunning { server.terminate() }
            server.waitUntilExit()
        }
        var ready = Data()
        while !String(decoding: ready, as: UTF8.self).contains("ready") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { return XCTFail("server did not start") }
            ready += chunk
        }
        let (client, clientOutput) = try a.python("""
        import socket, hashlib, random
        random.seed(7)
        data = random.randbytes(\(total))
        s = socket.create_connection(('10.198.0.2', 9002), timeout=20)
        s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(1)
        print(hashlib.sha256(data).hexdigest(), flush=True)
        """)
        let sent = String(decoding: clientOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        client.waitUntilExit()
        let received = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let digest = sent.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(digest.count, 64, "client: \(sent)")
        XCTAssertEqual(received.trimmingCharacters(in: .whitespacesAndNewlines), "\(total) \(digest)")
        let s = sideA.stats.withLock { $0 }
        let r = sideB.stats.withLock { $0 }
        print("null tunnel A->B: \(s.segments) segments from \(s.tunReads) TUN reads, \(s.datagramsSent) datagrams in \(s.udpMessagesSent) sendmmsg messages; B: \(r.datagramsReceived) datagrams in \(r.udpMessagesReceived) recvmmsg messages, \(r.tunWrites) TUN writes (\(r.superPacketsWritten) super-packets)")
        XCTAssertLessThan(s.tunReads * 4, s.segments, "TSO: several segments per TUN read")
        XCTAssertLessThan(s.udpMessagesSent * 4, s.datagramsSent, "UDP GSO: several datagrams per message")
        XCTAssertLessThan(r.udpMessagesReceived * 2, r.datagramsReceived, "UDP GRO: several datagrams per message")
        XCTAssertLessThan(r.tunWrites * 4, r.datagramsReceived, "coalescing: several segments per TUN write")
    }
}
#endif
