// `warren-offload-bench tunnel [seconds]`: a null-cipher tunnel between two network namespaces
// (wof-ta, wof-tb) joined by a veth pair, to measure what the offloads do to the device's I/O
// alone. Each side runs the device's own TUN and UDP layer (`LinuxTUNInterface`, `LinuxBind`)
// on two threads, TUN -> UDP and UDP -> TUN, framing every inner packet as a WireGuard
// transport message would be (16-byte header in front, padding and a 16-byte tag behind, no
// encryption). iperf3 runs one TCP stream through it, once with the offloads (TUN TSO +
// segmenter, UDP GSO, UDP GRO, coalesced TUN writes) and once without (one packet per TUN read
// and write, sendmmsg/recvmmsg of single datagrams). Needs root and iperf3.

#if os(Linux)
import Foundation
import Glibc
import WarrenLinux
import WarrenPacket
import WireGuardDevice

@discardableResult
func sh(_ arguments: [String]) -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    do { try p.run() } catch { return (-1, "\(error)") }
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// TUN -> frame -> UDP for one side, until the TUN is closed.
func outbound(tun: LinuxTUNInterface, bind: LinuxBind, peer: WireGuardEndpoint) {
    let headroom = WireGuardDeviceConstants.dataHeaderSize
    let buffers = PacketBuffers(capacity: WireGuardDeviceConstants.batchSize, slotSize: WireGuardDeviceConstants.slotSize)
    while let count = try? tun.readPackets(into: buffers, headroom: headroom) {
        for i in 0..<count {
            let length = buffers.lengths[i]
            buffers.offsets[i] = 0
            buffers.lengths[i] = headroom + max(length, min((length + 15) & ~15, tun.mtu)) + 16
            buffers.endpoints[i] = peer
        }
        try? bind.send(buffers, count: count)
    }
}

/// UDP -> unframe -> TUN for one side, until the bind is closed.
func inbound(tun: LinuxTUNInterface, bind: LinuxBind) {
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
            let ipLength = inner.load(as: UInt8.self) >> 4 == 6 ? 40 + Int(FastChecksum.load16(inner, at: 4))
                : Int(FastChecksum.load16(inner, at: 2))
            buffers.offsets[i] += 16
            buffers.lengths[i] = ipLength <= room ? ipLength : 0
        }
        try? tun.writePackets(buffers, count: count)
    }
}

func cpuSecondsOfProcess() -> Double {
    var u = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &u)
    return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
}

/// One iperf3 run through the tunnel; returns (Gbit/s, forwarder CPU seconds per GB, retransmits).
func tunnelRun(offload: Bool, seconds: Int) -> (Double, Double, Int)? {
    let a = "wof-ta", b = "wof-tb"
    for ns in [a, b] { sh(["ip", "netns", "delete", ns]) }
    defer { for ns in [a, b] { sh(["ip", "netns", "delete", ns]) } }
    for ns in [a, b] {
        sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    }
    sh(["ip", "-n", a, "link", "add", "woftva", "type", "veth", "peer", "name", "woftvb", "netns", b])
    sh(["ip", "-n", a, "addr", "add", "192.168.199.1/24", "dev", "woftva"])
    sh(["ip", "-n", b, "addr", "add", "192.168.199.2/24", "dev", "woftvb"])
    sh(["ip", "-n", a, "link", "set", "woftva", "up"])
    sh(["ip", "-n", b, "link", "set", "woftvb", "up"])
    guard let tunA = try? NetworkNamespace.run(in: a, { try LinuxTUNInterface(name: "woft0", offloads: offload) }),
          let tunB = try? NetworkNamespace.run(in: b, { try LinuxTUNInterface(name: "woft0", offloads: offload) })
    else { print("cannot open TUN devices"); return nil }
    let bindA = LinuxBind(segmentationOffload: offload, receiveCoalescing: offload)
    let bindB = LinuxBind(segmentationOffload: offload, receiveCoalescing: offload)
    guard (try? NetworkNamespace.run(in: a, { try bindA.open(port: 51000) })) != nil,
          (try? NetworkNamespace.run(in: b, { try bindB.open(port: 51000) })) != nil
    else { print("cannot open UDP sockets"); return nil }
    for (ns, address) in [(a, "10.199.0.1/24"), (b, "10.199.0.2/24")] {
        sh(["ip", "-n", ns, "addr", "add", address, "dev", "woft0"])
    }
    let peerOfA = WireGuardEndpoint(address: IPAddress("192.168.199.2")!, port: 51000)
    let peerOfB = WireGuardEndpoint(address: IPAddress("192.168.199.1")!, port: 51000)
    let finished = DispatchSemaphore(value: 0)
    let threads = [
        Thread { outbound(tun: tunA, bind: bindA, peer: peerOfA); finished.signal() },
        Thread { outbound(tun: tunB, bind: bindB, peer: peerOfB); finished.signal() },
        Thread { inbound(tun: tunA, bind: bindA); finished.signal() },
        Thread { inbound(tun: tunB, bind: bindB); finished.signal() },
    ]
    for t in threads { t.start() }
    defer {
        for tun in [tunA, tunB] { tun.close() }
        for bind in [bindA, bindB] { bind.close() }
        for _ in threads { finished.wait() }
    }
    let server = Process()
    server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    server.arguments = ["ip", "netns", "exec", b, "iperf3", "-s", "-1", "-B", "10.199.0.2"]
    server.standardOutput = FileHandle.nullDevice
    try? server.run()
    usleep(500_000)
    let cpuBefore = cpuSecondsOfProcess()
    let (status, json) = sh(["ip", "netns", "exec", a, "iperf3", "-c", "10.199.0.2", "-t", "\(seconds)", "-J"])
    let cpu = cpuSecondsOfProcess() - cpuBefore
    if server.isRunning { server.terminate() }
    server.waitUntilExit()
    usleep(300_000)
    guard status == 0, let data = json.data(using: .utf8),
          let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
          let end = root["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
          let bps = received["bits_per_second"] as? Double, let bytes = received["bytes"] as? Double
    else { print("iperf3 failed: \(json.prefix(300))"); return nil }
    let retransmits = ((end["sum_sent"] as? [String: Any])?["retransmits"] as? Int) ?? -1
    return (bps / 1e9, cpu / (bytes / 1e9), retransmits)
}

func tunnelBenchmark(seconds: Int, rounds: Int) {
    guard getuid() == 0 else { return print("tunnel: needs root") }
    print("null-cipher tunnel, 1 TCP stream (iperf3 -t \(seconds)), MTU 1420, 2 namespaces + veth, \(rounds) rounds")
    for round in 1...rounds {
        for offload in round % 2 == 1 ? [false, true] : [true, false] {
            if let (gbps, cpu, retransmits) = tunnelRun(offload: offload, seconds: seconds) {
                print("round \(round) \(offload ? "offloads   " : "no offloads") \(String(format: "%6.2f", gbps)) Gbit/s  forwarder CPU \(String(format: "%5.2f", cpu)) s/GB  retransmits \(retransmits)")
            }
        }
    }
}
#endif
