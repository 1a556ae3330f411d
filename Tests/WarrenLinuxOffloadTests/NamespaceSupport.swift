#if os(Linux)
import Foundation
import Glibc
import WarrenLinux
import XCTest

/// A network namespace the test creates (name prefixed `wof`) and removes.
final class TestNamespace {
    let name: String

    init(_ suffix: String) throws {
        name = "wof-\(suffix)-\(getpid())"
        _ = try? run("/usr/sbin/ip", "netns", "delete", name)
        try run("/usr/sbin/ip", "netns", "add", name)
        try ip("link", "set", "lo", "up")
    }

    deinit { _ = try? run("/usr/sbin/ip", "netns", "delete", name) }

    func ip(_ arguments: String...) throws {
        try run("/usr/sbin/ip", ["-n", name] + arguments)
    }

    /// Runs `body` with the calling thread inside the namespace, then moves it back.
    func inside<T>(_ body: () throws -> T) throws -> T {
        try NetworkNamespace.run(in: name, body)
    }

    /// The kernel's packet counters of interface `device` in the namespace (`ip -s -j link`).
    func packetCounters(_ device: String) throws -> (rx: Int, tx: Int) {
        let json = try WarrenLinuxOffloadTests.run("/usr/sbin/ip", "-n", name, "-s", "-j", "link", "show", "dev", device)
        guard let list = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]],
              let stats = list.first?["stats64"] as? [String: Any],
              let rx = (stats["rx"] as? [String: Any])?["packets"] as? Int,
              let tx = (stats["tx"] as? [String: Any])?["packets"] as? Int
        else { throw XCTSkip("no packet counters for \(device) from ip -s -j link") }
        return (rx, tx)
    }

    /// A counter of /proc/net/snmp in the namespace ("Udp", "InDatagrams").
    func snmpCounter(_ group: String, _ field: String) throws -> Int {
        let text = try WarrenLinuxOffloadTests.run("/usr/sbin/ip", "netns", "exec", name, "cat", "/proc/net/snmp")
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("\(group):") }
        guard lines.count == 2 else { throw XCTSkip("no \(group) in /proc/net/snmp") }
        let names = lines[0].split(separator: " ").dropFirst()
        let values = lines[1].split(separator: " ").dropFirst()
        guard let index = names.firstIndex(of: Substring(field)), let value = Int(values[index]) else {
            throw XCTSkip("no \(group) \(field) in /proc/net/snmp")
        }
        return value
    }

    /// Starts `python3 -c script` inside the namespace; the caller waits for or ends it (by its PID).
    func python(_ script: String) throws -> (Process, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", name, "python3", "-c", script]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        return (process, out)
    }
}

@discardableResult
func run(_ tool: String, _ arguments: String...) throws -> String { try run(tool, arguments) }

@discardableResult
func run(_ tool: String, _ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    let out = Pipe()
    process.standardOutput = out
    process.standardError = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    if process.terminationStatus != 0 {
        throw NSError(domain: "wof", code: Int(process.terminationStatus),
                      userInfo: [NSLocalizedDescriptionKey: "\(tool) \(arguments.joined(separator: " ")): \(text)"])
    }
    return text
}

func requireRoot() throws {
    guard getuid() == 0 else { throw XCTSkip("needs root (network namespaces, TUN)") }
    guard FileManager.default.fileExists(atPath: "/dev/net/tun") else { throw XCTSkip("no /dev/net/tun") }
    guard FileManager.default.fileExists(atPath: "/usr/sbin/ip") else { throw XCTSkip("no iproute2") }
}

// MARK: minimal packet building (IPv4 + TCP), for playing the remote end of a connection

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

func u16(_ v: Int) -> [UInt8] { [UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
/// The two ends of the test's TCP connection through the TUN, in one address family.
struct Family: CustomStringConvertible {
    var v6: Bool
    var local: [UInt8]
    var peer: [UInt8]
    var localText: String
    var peerText: String
    /// Where the transport header starts (no IPv4 options, no IPv6 extension headers).
    var t: Int { v6 ? 40 : 20 }
    var description: String { v6 ? "IPv6" : "IPv4" }

    static let v4 = Family(v6: false, local: [10, 77, 0, 1], peer: [10, 77, 0, 2], localText: "10.77.0.1", peerText: "10.77.0.2")
    static let v6 = Family(v6: true, local: [0xfd, 0x77] + [UInt8](repeating: 0, count: 13) + [1],
                           peer: [0xfd, 0x77] + [UInt8](repeating: 0, count: 13) + [2], localText: "fd77::1", peerText: "fd77::2")

    /// A TCP packet from the peer (the test) to the local end (the kernel).
    func fromPeer(_ sport: Int, _ dport: Int, seq: UInt32, ack: UInt32, flags: UInt8, options: [UInt8] = [],
                  payload: [UInt8] = [], id: Int = 0) -> [UInt8] {
        v6 ? tcp6(from: peer, sport, to: local, dport, seq: seq, ack: ack, flags: flags, options: options, payload: payload)
            : tcp4(from: peer, sport, to: local, dport, seq: seq, ack: ack, flags: flags, options: options, payload: payload, id: id)
    }

    /// Whether `p` is a TCP packet of this family.
    func isTCP(_ p: [UInt8]) -> Bool {
        v6 ? p.count >= 60 && p[0] >> 4 == 6 && p[6] == 6 : p.count >= 40 && p[0] == 0x45 && p[9] == 6
    }
}

func u32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
func get16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) << 8 | Int(b[o + 1]) }
func get32(_ b: [UInt8], _ o: Int) -> UInt32 { UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3]) }

/// An IPv4 TCP packet with valid checksums.
func tcp4(from source: [UInt8], _ sport: Int, to destination: [UInt8], _ dport: Int, seq: UInt32, ack: UInt32,
          flags: UInt8, options: [UInt8] = [], payload: [UInt8] = [], id: Int = 0) -> [UInt8] {
    var t = u16(sport) + u16(dport) + u32(seq) + u32(ack) + [UInt8(((20 + options.count) / 4) << 4), flags] + u16(65535) + [0, 0, 0, 0]
    t += options + payload
    let c = 0xFFFF - sum16(source + destination + [0, 6] + u16(t.count) + t)
    t[16] = UInt8(c >> 8)
    t[17] = UInt8(c & 0xFF)
    var h: [UInt8] = [0x45, 0] + u16(20 + t.count) + u16(id) + [0x40, 0, 64, 6, 0, 0] + source + destination
    let hc = 0xFFFF - sum16(h)
    h[10] = UInt8(hc >> 8)
    h[11] = UInt8(hc & 0xFF)
    return h + t
}

/// An IPv6 TCP packet with a valid checksum.
func tcp6(from source: [UInt8], _ sport: Int, to destination: [UInt8], _ dport: Int, seq: UInt32, ack: UInt32,
          flags: UInt8, options: [UInt8] = [], payload: [UInt8] = []) -> [UInt8] {
    var t = u16(sport) + u16(dport) + u32(seq) + u32(ack) + [UInt8(((20 + options.count) / 4) << 4), flags] + u16(65535) + [0, 0, 0, 0]
    t += options + payload
    let c = 0xFFFF - sum16(source + destination + u32(UInt32(t.count)) + [0, 0, 0, 6] + t)
    t[16] = UInt8(c >> 8)
    t[17] = UInt8(c & 0xFF)
    return [0x60, 0, 0, 0] + u16(t.count) + [6, 64] + source + destination + t
}

/// Checks IP lengths, the IPv4 header checksum and the TCP/UDP checksum by the book.
func checksumsValid(_ p: [UInt8]) -> Bool {
    if p.count >= 48, p[0] >> 4 == 6 {
        let t = Array(p[40...])
        return get16(p, 4) + 40 == p.count && sum16(Array(p[8..<40]) + u32(UInt32(t.count)) + [0, 0, 0, p[6]] + t) == 0xFFFF
    }
    guard p.count >= 20, p[0] >> 4 == 4 else { return false }
    let ihl = Int(p[0] & 0x0F) * 4
    let t = Array(p[ihl...])
    return get16(p, 2) == p.count && sum16(Array(p[0..<ihl])) == 0xFFFF
        && sum16(Array(p[12..<20]) + [0, p[9]] + u16(t.count) + t) == 0xFFFF
}
#endif
