#if os(Linux)
import Foundation
import Glibc
import Synchronization
import WarrenLinux
import WarrenPacket
import WireGuardDevice
import XCTest

/// The device's whole offload path minus the cipher: two namespaces joined by a veth pair, in
/// each the device's own TUN (`LinuxTUNInterface`: TSO + segmenter, coalesced writes) and UDP
/// sockets (`LinuxBind`: UDP GSO sends, UDP GRO receives), and per side a TUN -> UDP thread that
/// frames each segment as a transport message would be (16-byte header, padding, 16-byte tag)
/// and a UDP -> TUN thread that unframes. A TCP transfer runs across it.
final class NullTunnelTests: XCTestCase {
    struct Stats {
        var segments = 0, datagramsReceived = 0
    }

    final class Side: @unchecked Sendable {
        let tun: LinuxTUNInterface
        let bind: LinuxBind
        let peer: WireGuardEndpoint
        let stats = Mutex(Stats())

        init(tun: LinuxTUNInterface, bind: LinuxBind, peer: WireGuardEndpoint) {
            self.tun = tun
            self.bind = bind
            self.peer = peer
        }

        /// TUN -> frame -> UDP, until the TUN is closed.
        func outbound() {
            let headroom = WireGuardDeviceConstants.dataHeaderSize
            let buffers = PacketBuffers(capacity: WireGuardDeviceConstants.batchSize, slotSize: WireGuardDeviceConstants.slotSize)
            while let count = try? tun.readPackets(into: buffers, headroom: headroom) {
                for i in 0..<count {
                    let length = buffers.lengths[i]
                    let padded = max(length, min((length + 15) & ~15, tun.mtu))
                    buffers.offsets[i] = 0
                    buffers.lengths[i] = headroom + padded + 16
                    buffers.endpoints[i] = peer
                }
                try? bind.send(buffers, count: count)
                stats.withLock { $0.segments += count }
            }
        }

        /// UDP -> unframe -> TUN, until the bind is closed.
        func inbound() {
            let buffers = PacketBuffers(capacity: WireGuardDeviceConstants.batchSize, slotSize: WireGuardDeviceConstants.slotSize)
            while let count = try? bind.receive(0, into: buffers) {
                for i in 0..<count {
                    let inner = buffers.slot(i) + buffers.offsets[i] + 16
                    let room = buffers.lengths[i] - 32
                    guard room > 20 else {
                        buffers.lengths[i] = 0
                        continue
                    }
                    // The inner packet's own length (the padding is not part of it).
                    let first = inner.load(as: UInt8.self)
                    let ipLength = first >> 4 == 6 ? 40 + Int(FastChecksum.load16(inner, at: 4)) : Int(FastChecksum.load16(inner, at: 2))
                    buffers.offsets[i] += 16
                    buffers.lengths[i] = ipLength <= room ? ipLength : 0
                }
                try? tun.writePackets(buffers, count: count)
                stats.withLock { $0.datagramsReceived += count }
            }
        }
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
        let tunA = try a.inside { try LinuxTUNInterface(name: "wofnt0") }
        let tunB = try b.inside { try LinuxTUNInterface(name: "wofnt0") }
        XCTAssertTrue(tunA.offloads && tunB.offloads, "IFF_VNET_HDR with TSO")
        let bindA = LinuxBind(), bindB = LinuxBind()
        _ = try a.inside { try bindA.open(port: 51000) }
        _ = try b.inside { try bindB.open(port: 51000) }
        for (ns, address) in [(a, "10.198.0.1/24"), (b, "10.198.0.2/24")] {
            try ns.ip("addr", "add", address, "dev", "wofnt0")
        }
        let sideA = Side(tun: tunA, bind: bindA, peer: WireGuardEndpoint(address: IPAddress("192.168.198.2")!, port: 51000))
        let sideB = Side(tun: tunB, bind: bindB, peer: WireGuardEndpoint(address: IPAddress("192.168.198.1")!, port: 51000))
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
            for side in [sideA, sideB] {
                side.tun.close()
                side.bind.close()
            }
            for _ in running { finished.wait() }
        }
        let before = (tunA: try a.packetCounters("wofnt0"), vethA: try a.packetCounters("wofnva"),
                      tunB: try b.packetCounters("wofnt0"), udpB: try b.snmpCounter("Udp", "InDatagrams"))
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
        // What the kernel saw: TUN reads in A (tx of wofnt0), UDP messages leaving A (tx of the
        // veth), recvmsg calls in B (Udp InDatagrams counts one per coalesced buffer), TUN writes in B.
        let tunReads = try a.packetCounters("wofnt0").tx - before.tunA.tx
        let udpMessagesSent = try a.packetCounters("wofnva").tx - before.vethA.tx
        let udpMessagesReceived = try b.snmpCounter("Udp", "InDatagrams") - before.udpB
        let tunWrites = try b.packetCounters("wofnt0").rx - before.tunB.rx
        print("null tunnel A->B: \(s.segments) segments from \(tunReads) TUN reads, sent in \(udpMessagesSent) UDP messages; B: \(r.datagramsReceived) datagrams in \(udpMessagesReceived) receives, \(tunWrites) TUN writes")
        XCTAssertLessThan(tunReads * 4, s.segments, "TSO: several segments per TUN read")
        XCTAssertLessThan(udpMessagesSent * 4, s.segments, "UDP GSO: several datagrams per message")
        XCTAssertLessThan(udpMessagesReceived * 2, r.datagramsReceived, "UDP GRO: several datagrams per receive")
        XCTAssertLessThan(tunWrites * 4, r.datagramsReceived, "coalescing: several segments per TUN write")
    }
}
#endif
