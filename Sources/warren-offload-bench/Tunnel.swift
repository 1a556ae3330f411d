// `warren-offload-bench tunnel [seconds]`: a null-cipher tunnel between two network namespaces
// (wof-ta, wof-tb) joined by a veth pair, to measure what the offloads do to the I/O alone.
// Each side forwards TUN -> UDP and UDP -> TUN on two threads, framing every inner packet as a
// WireGuard transport message would be (16-byte header in front, 16-byte tag behind, no
// encryption). iperf3 runs one TCP stream through it, once with the offloads (TUN TSO + segmenter,
// UDP GSO, UDP GRO, coalesced TUN writes) and once without (one packet per TUN read and write,
// sendmmsg/recvmmsg of single datagrams: the device's design today). Needs root and iperf3.

#if os(Linux)
import CWarrenOffload
import Foundation
import Glibc
import WarrenLinux
import WarrenPacket

nonisolated(unsafe) var tunnelStop = false

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

func inNamespace<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
    let original = cwarren_offload_netns_open("/proc/thread-self/ns/net")
    let target = cwarren_offload_netns_open("/run/netns/\(name)")
    precondition(original >= 0 && target >= 0 && cwarren_offload_netns_enter(target) == 0, "setns \(name)")
    defer {
        precondition(cwarren_offload_netns_enter(original) == 0)
        close(original)
        close(target)
    }
    return try body()
}

func udpSocket(port: UInt16) -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    let ok = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    precondition(fd >= 0 && ok, "UDP socket")
    var size: Int32 = 7 << 20
    _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(4))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(4))
    return fd
}

func waitReadable(_ fd: Int32) -> Bool { cwarren_offload_poll_in(fd, 100) == 1 }

/// TUN -> UDP for one side.
func outbound(tun: OffloadTUNDevice, socket: Int32, peer: IPAddress, offload: Bool) {
    let capacity = 128, slot = 2048, headroom = 16
    let slots = UnsafeMutableRawPointer.allocate(byteCount: capacity * slot, alignment: 64)
    let lengths = UnsafeMutablePointer<Int>.allocate(capacity: capacity)
    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: OffloadTUNDevice.maximumReadLength, alignment: 64)
    let batch = UDPOffloadBatch(datagramCapacity: capacity, segmentation: offload)
    var pending = 0  // bytes of a read waiting for room in the next batch
    while !tunnelStop {
        var count = 0
        while count < capacity {
            let n: Int
            if pending > 0 {
                n = pending
                pending = 0
            } else {
                guard let r = try? tun.read(into: scratch) else { break }
                n = r
            }
            guard n > VirtioNetHeader.size, let header = try? VirtioNetHeader(decoding: UnsafeRawBufferPointer(scratch)) else { continue }
            let packet = UnsafeRawBufferPointer(rebasing: scratch[VirtioNetHeader.size..<n])
            guard let need = try? GSOSegmenter.segmentCount(packet, header: header) else { continue }
            if count + need > capacity {
                pending = n
                break
            }
            let made = (try? GSOSegmenter.segment(packet, header: header) { i, length in
                guard length <= slot - headroom - 16 else { return nil }
                lengths[count + i] = length
                return slots + (count + i) * slot + headroom
            }) ?? 0
            count += made
        }
        if count == 0 {
            _ = try? tun.waitReadable(timeoutMilliseconds: 100)
            continue
        }
        batch.reset()
        for i in 0..<count {
            // Frame as a transport message: 16-byte header, payload padded to 16, 16-byte tag.
            let padded = min((lengths[i] + 15) & ~15, 1420)
            batch.append(UnsafeRawBufferPointer(start: slots + i * slot, count: headroom + max(padded, lengths[i]) + 16), to: peer, port: 51000)
        }
        _ = try? batch.send(on: socket)
    }
}

/// UDP -> TUN for one side.
func inbound(tun: OffloadTUNDevice, socket: Int32, offload: Bool) {
    let messages = offload ? 16 : 128
    let slot = offload ? 65536 : 2048
    let memory = UnsafeMutableRawPointer.allocate(byteCount: messages * slot, alignment: 64)
    let batch = UDPOffloadBatch(datagramCapacity: messages)
    for i in 0..<messages { batch.setReceiveBuffer(i, UnsafeMutableRawBufferPointer(start: memory + i * slot, count: slot)) }
    let coalescer = TCPCoalescer(maximumPackets: 1024, maximumPacketLength: 1500)
    while !tunnelStop {
        guard let n = try? batch.receive(on: socket, count: messages), n > 0 else {
            _ = waitReadable(socket)
            continue
        }
        coalescer.reset()
        for i in 0..<n {
            guard let length = batch.receivedLength(i) else { continue }
            let size = batch.segmentSize(i)
            for k in 0..<UDPSegmentation.datagramCount(length: length, segmentSize: size) {
                let r = UDPSegmentation.datagramRange(k, length: length, segmentSize: size)
                let message = memory + i * slot + r.lowerBound
                guard r.count > 32 else { continue }
                // The inner packet's own length (the padding is not part of it).
                let inner = UnsafeRawBufferPointer(start: message + 16, count: r.count - 32)
                let ipLength = inner[0] >> 4 == 6 ? 40 + (Int(inner[4]) << 8 | Int(inner[5])) : Int(inner[2]) << 8 | Int(inner[3])
                guard ipLength <= inner.count else { continue }
                let packet = UnsafeRawBufferPointer(rebasing: inner[0..<ipLength])
                if offload {
                    if !coalescer.add(packet) {
                        coalescer.finish()
                        for o in 0..<coalescer.outputCount { _ = try? tun.write(coalescer.output(o)) }
                        coalescer.reset()
                        coalescer.add(packet)
                    }
                } else {
                    // A zero virtio-net header in the message's header room, then the packet.
                    (message + 6).initializeMemory(as: UInt8.self, repeating: 0, count: 10)
                    _ = try? tun.write(UnsafeRawBufferPointer(start: message + 6, count: 10 + ipLength))
                }
            }
        }
        if offload {
            coalescer.finish()
            for o in 0..<coalescer.outputCount { _ = try? tun.write(coalescer.output(o)) }
        }
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
    let requested: TUNOffloads = offload ? .all : []
    guard let tunA = try? inNamespace(a, { try OffloadTUNDevice(name: "woft0", requesting: requested) }),
          let tunB = try? inNamespace(b, { try OffloadTUNDevice(name: "woft0", requesting: requested) })
    else { print("cannot open TUN devices"); return nil }
    let udpA = inNamespace(a) { udpSocket(port: 51000) }
    let udpB = inNamespace(b) { udpSocket(port: 51000) }
    defer { close(udpA); close(udpB) }
    if offload {
        UDPOffload.enableReceiveCoalescing(fileDescriptor: udpA)
        UDPOffload.enableReceiveCoalescing(fileDescriptor: udpB)
    }
    for (ns, address) in [(a, "10.199.0.1/24"), (b, "10.199.0.2/24")] {
        sh(["ip", "-n", ns, "addr", "add", address, "dev", "woft0"])
        sh(["ip", "-n", ns, "link", "set", "woft0", "mtu", "1420", "up"])
    }
    tunnelStop = false
    let threads = [
        Thread { outbound(tun: tunA, socket: udpA, peer: IPAddress("192.168.199.2")!, offload: offload) },
        Thread { outbound(tun: tunB, socket: udpB, peer: IPAddress("192.168.199.1")!, offload: offload) },
        Thread { inbound(tun: tunA, socket: udpA, offload: offload) },
        Thread { inbound(tun: tunB, socket: udpB, offload: offload) },
    ]
    for t in threads { t.start() }
    let server = Process()
    server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    server.arguments = ["ip", "netns", "exec", b, "iperf3", "-s", "-1", "-B", "10.199.0.2"]
    server.standardOutput = FileHandle.nullDevice
    try? server.run()
    usleep(500_000)
    let cpuBefore = cpuSecondsOfProcess()
    let (status, json) = sh(["ip", "netns", "exec", a, "iperf3", "-c", "10.199.0.2", "-t", "\(seconds)", "-J"])
    let cpu = cpuSecondsOfProcess() - cpuBefore
    tunnelStop = true
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
