// warren-offload-bench: packets per second per core through the offload helpers on one
// thread: GSO segmentation of 64 KB TCP super-packets (what a TUN with TSO hands over) into
// MTU-sized packets, and TCP coalescing of MTU-sized segments into super-packets (what goes
// back into the TUN). Figures are per CPU-second of this thread (CLOCK_THREAD_CPUTIME_ID).
// Run on demand: swift run -c release warren-offload-bench [seconds-per-case]
// or, as root: warren-offload-bench tunnel [seconds] [rounds] (see Tunnel.swift).

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import WarrenPacket

#if os(Linux)
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "tunnel" {
    let seconds = CommandLine.arguments.count > 2 ? Int(CommandLine.arguments[2]) ?? 5 : 5
    let rounds = CommandLine.arguments.count > 3 ? Int(CommandLine.arguments[3]) ?? 3 : 3
    tunnelBenchmark(seconds: seconds, rounds: rounds)
    exit(0)
}
#endif
let secondsPerCase = CommandLine.arguments.count > 1 ? Double(CommandLine.arguments[1]) ?? 2 : 2

func cpuSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// Runs `body` (which handles `unit` packets per call) for about `secondsPerCase` of CPU time.
func measure(_ name: String, packetsPerCall: Int, bytesPerCall: Int, _ body: () -> Void) {
    for _ in 0..<50 { body() }  // warm up
    var calls = 0
    let start = cpuSeconds()
    var elapsed = 0.0
    while elapsed < secondsPerCase {
        for _ in 0..<64 { body() }
        calls += 64
        elapsed = cpuSeconds() - start
    }
    let packets = Double(calls * packetsPerCall) / elapsed
    let gbits = Double(calls * bytesPerCall) * 8 / elapsed / 1e9
    let pad = String(repeating: " ", count: max(0, 52 - name.count))
    print("\(name)\(pad)\(String(format: "%10.0f", packets)) packets/s  \(String(format: "%6.2f", gbits)) Gbit/s  \(String(format: "%6.3f", 1e6 / packets)) µs/packet")
}

/// Keeps a result alive so that the optimizer does not drop the work behind it.
@inline(never)
func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }

func sum16(_ bytes: [UInt8]) -> Int {
    var s = 0
    var i = 0
    while i < bytes.count {
        s += Int(bytes[i]) << 8 | (i + 1 < bytes.count ? Int(bytes[i + 1]) : 0)
        i += 2
    }
    while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
    return s
}

func be16(_ v: Int) -> [UInt8] { [UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }

/// A TCP packet (IPv4 or IPv6) with timestamps; `partial` leaves the pseudo-header sum in the checksum.
func tcp(v6: Bool, port: Int = 40000, seq: UInt32, payload: [UInt8], id: Int, partial: Bool) -> [UInt8] {
    let src: [UInt8] = v6 ? [0xfd] + [UInt8](repeating: 0, count: 14) + [1] : [10, 0, 0, 1]
    let dst: [UInt8] = v6 ? [0xfd] + [UInt8](repeating: 0, count: 14) + [2] : [10, 0, 0, 2]
    var t = be16(port) + be16(5201) + be32(seq) + be32(1) + [0x80, 0x10] + be16(502) + [0, 0, 0, 0]
    t += [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2] + payload
    let pseudo = v6 ? src + dst + be32(UInt32(t.count)) + [0, 0, 0, 6] : src + dst + [0, 6] + be16(t.count)
    let c = partial ? sum16(pseudo) : 0xFFFF - sum16(pseudo + t)
    t[16] = UInt8(c >> 8)
    t[17] = UInt8(c & 0xFF)
    if v6 { return [0x60, 0, 0, 0] + be16(t.count) + [6, 64] + src + dst + t }
    var h: [UInt8] = [0x45, 0] + be16(20 + t.count) + be16(id) + [0x40, 0, 64, 6, 0, 0] + src + dst
    let hc = 0xFFFF - sum16(h)
    h[10] = UInt8(hc >> 8)
    h[11] = UInt8(hc & 0xFF)
    return h + t
}

let mss = 1368  // 1420 MTU - 20 IPv4 - 32 TCP with timestamps
print("warren-offload-bench: one thread, \(secondsPerCase) CPU-s per case, MSS \(mss)")

// MARK: segmentation
let slotSize = 2048
let slots = UnsafeMutableRawPointer.allocate(byteCount: 64 * slotSize, alignment: 64)
for v6 in [false, true] {
    let segments = 47
    let payload = (0..<(segments * mss)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
    let packet = tcp(v6: v6, seq: 1000, payload: payload, id: 1, partial: true)
    let t = v6 ? 40 : 20
    let header = VirtioNetHeader(flags: .needsChecksum, gsoType: v6 ? .tcpV6 : .tcpV4, headerLength: UInt16(t + 32),
                                 gsoSize: UInt16(mss), checksumStart: UInt16(t), checksumOffset: 16)
    packet.withUnsafeBytes { raw in
        measure("segment 64 KB TCP/IPv\(v6 ? 6 : 4) super-packet (\(segments) segments)",
                packetsPerCall: segments, bytesPerCall: payload.count) {
            let n = try? GSOSegmenter.segment(raw, header: header) { index, length in slots + index * slotSize }
            precondition(n == segments)
        }
    }
}

// Baseline: only the copies the segmenter makes (headers + payload into 47 slots), no checksums.
do {
    let packet = tcp(v6: false, seq: 1000, payload: [UInt8](repeating: 7, count: 47 * mss), id: 1, partial: true)
    packet.withUnsafeBytes { raw in
        measure("  baseline: memcpy of the same 47 segments", packetsPerCall: 47, bytesPerCall: 47 * mss) {
            for i in 0..<47 {
                (slots + i * slotSize).copyMemory(from: raw.baseAddress!, byteCount: 52)
                (slots + i * slotSize + 52).copyMemory(from: raw.baseAddress! + 52 + i * mss, byteCount: mss)
            }
        }
    }
}

// MARK: coalescing
for (label, v6, flows) in [("1 flow, IPv4", false, 1), ("1 flow, IPv6", true, 1), ("4 interleaved flows, IPv4", false, 4)] {
    let count = 64
    var packets = [[UInt8]]()
    var seqs = [UInt32](repeating: 1000, count: flows)
    for i in 0..<count {
        let f = i % flows
        packets.append(tcp(v6: v6, port: 40000 + f, seq: seqs[f], payload: (0..<mss).map { UInt8(truncatingIfNeeded: $0 &+ i) },
                           id: i, partial: false))
        seqs[f] &+= UInt32(mss)
    }
    let memory = packets.joined().map { $0 }
    let coalescer = PacketCoalescer(maximumPackets: count)
    memory.withUnsafeBytes { raw in
        let views = (0..<count).map { UnsafeRawBufferPointer(rebasing: raw[($0 * packets[0].count)..<(($0 + 1) * packets[0].count)]) }
        measure("coalesce \(count) x \(mss) B segments, \(label)", packetsPerCall: count, bytesPerCall: count * mss) {
            coalescer.reset()
            for v in views { coalescer.add(v) }
            coalescer.finish()
            for o in 0..<coalescer.outputCount { blackHole(coalescer.output(o).count) }
        }
        print("  -> \(coalescer.outputCount) writes of up to \(coalescer.output(0).count) bytes instead of \(count)")
    }
}

// Pass-through cost: 64 packets that cannot be coalesced (UDP).
do {
    var udp = [UInt8](repeating: 0, count: 1420)
    udp[0] = 0x45
    udp[9] = 17
    let memory = [UInt8]((0..<64).map { _ in udp }.joined())
    let coalescer = PacketCoalescer(maximumPackets: 64)
    memory.withUnsafeBytes { raw in
        let views = (0..<64).map { UnsafeRawBufferPointer(rebasing: raw[($0 * 1420)..<(($0 + 1) * 1420)]) }
        measure("pass-through of 64 x 1420 B non-TCP packets (written in place)", packetsPerCall: 64, bytesPerCall: 64 * 1420) {
            coalescer.reset()
            for v in views { coalescer.add(v) }
            coalescer.finish()
            for o in 0..<coalescer.outputCount { blackHole(coalescer.singleInput(ofOutput: o) ?? -1) }
        }
    }
}
slots.deallocate()
