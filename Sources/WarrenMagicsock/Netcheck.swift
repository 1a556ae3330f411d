// netcheck: STUN binding requests from the WireGuard socket itself (so the mapping learnt is the one
// peers will see) to every DERP region's STUN server, as tailscale/tailscale:net/netcheck does:
// whether UDP works, the public address and port, whether the mapping varies by destination (a
// "hard" NAT), the latency of each region, and the preferred region.

import Foundation
import STUNProtocol
import WarrenPacket
import WarrenTailcfg
import WireGuardDevice

/// What a netcheck found.
public struct NetcheckResult: Sendable, Hashable {
    public var udp = false
    public var ipv4 = false
    public var ipv6 = false
    public var globalV4: AddrPort?
    public var globalV6: AddrPort?
    /// Nil when fewer than two servers answered over IPv4.
    public var mappingVariesByDestIP: Bool?
    public var preferredDERP: Int?
    /// STUN round-trip per region (the best of its servers).
    public var regionLatency: [Int: Duration] = [:]

    public init() {}
}

extension Magicsock {
    /// Total time a netcheck waits for STUN answers.
    static let stunTimeout: Duration = .seconds(3)
    /// Resend a STUN request not answered after this.
    static let stunRetransmit: Duration = .milliseconds(500)

    static func looksLikeSTUNResponse(_ b: UnsafeRawBufferPointer) -> Bool {
        b.count >= STUNWire.headerLength && b[0] == 0x01 && b[1] == 0x01
            && b[4] == 0x21 && b[5] == 0x12 && b[6] == 0xA4 && b[7] == 0x42
    }

    /// The STUN servers of the DERP map: (region, address) for each node that has one, IPv4 and IPv6.
    func stunServers() -> [(Int, AddrPort)] {
        var out: [(Int, AddrPort)] = []
        for (id, region) in derp.map.regions.sorted(by: { $0.key < $1.key }) {
            for node in region.nodes ?? [] {
                let port = node.stunPort ?? 0
                if port < 0 { continue }
                let stunPort = UInt16(clamping: port == 0 ? 3478 : port)
                var hosts: [String] = []
                if let v4 = node.ipv4, v4 != "none", !v4.isEmpty { hosts.append(v4) }
                if let v6 = node.ipv6, v6 != "none", !v6.isEmpty { hosts.append(v6) }
                if hosts.isEmpty, IPAddress(node.hostName) != nil { hosts.append(node.hostName) }
                if let test = node.stunTestIP, IPAddress(test) != nil { hosts = [test] }
                for host in hosts {
                    if let address = IPAddress(host) { out.append((id, AddrPort(address: address, port: stunPort))) }
                }
            }
        }
        return out
    }

    /// Probes every STUN server and summarises. Never throws: a network without UDP gives a report
    /// with `udp == false` (and the preferred region from DERP connection times, or the first).
    public func netcheck() async -> NetcheckResult {
        let servers = configuration.stun ? stunServers() : []
        var rng = SystemRandomNumberGenerator()
        var outstanding: [[UInt8]: (Int, AddrPort)] = [:]
        state.withLock { s in
            s.stunAnswers = []
            s.stunPending = [:]
        }
        func sendRequest(_ region: Int, _ server: AddrPort) {
            let tx = (0..<12).map { _ in UInt8.random(in: 0...255, using: &rng) }
            guard let request = try? STUNBinding.request(transactionID: tx) else { return }
            state.withLock { $0.stunPending[tx] = (region, server, now()) }
            outstanding[tx] = (region, server)
            _ = request.withUnsafeBytes { try? inner.send($0, to: WireGuardEndpoint(address: server.address, port: server.port)) }
        }
        for (region, server) in servers { sendRequest(region, server) }
        if !servers.isEmpty {
            let start = now()
            var retransmitted = false
            while now() - start < Self.stunTimeout {
                try? await Task.sleep(for: .milliseconds(25))
                let answered = state.withLock { $0.stunAnswers.count }
                if answered >= servers.count { break }
                if !retransmitted && now() - start >= Self.stunRetransmit {
                    retransmitted = true
                    let answeredServers = state.withLock { s in Set(s.stunAnswers.map(\.server)) }
                    for (region, server) in servers where !answeredServers.contains(server) { sendRequest(region, server) }
                }
            }
        }
        let answers = state.withLock { s in
            s.stunPending = [:]
            return s.stunAnswers
        }
        var report = NetcheckResult()
        report.udp = !answers.isEmpty
        var v4Mapped: [AddrPort] = []
        for a in answers {
            if let known = report.regionLatency[a.region], known <= a.latency {} else { report.regionLatency[a.region] = a.latency }
            if a.mapped.address.version == .v4 {
                report.ipv4 = true
                if report.globalV4 == nil { report.globalV4 = a.mapped }
                if !v4Mapped.contains(a.mapped) || true { v4Mapped.append(a.mapped) }
            } else {
                report.ipv6 = true
                if report.globalV6 == nil { report.globalV6 = a.mapped }
            }
        }
        let v4Servers = Set(answers.filter { $0.mapped.address.version == .v4 }.map(\.server))
        if v4Servers.count >= 2 { report.mappingVariesByDestIP = Set(v4Mapped).count > 1 }
        if let best = report.regionLatency.min(by: { $0.value < $1.value || ($0.value == $1.value && $0.key < $1.key) }) {
            report.preferredDERP = best.key
        } else {
            // No UDP: the region whose relay answered fastest, else the lowest ID.
            let regions = derp.map.regions.keys.sorted()
            let timed = regions.compactMap { r in derp.latency(of: r).map { (r, $0) } }
            report.preferredDERP = timed.min(by: { $0.1 < $1.1 })?.0 ?? regions.first
        }
        state.withLock { s in
            s.report = report
            s.lastNetcheck = now()
        }
        return report
    }

    func handleSTUN(_ bytes: [UInt8], from source: AddrPort) {
        guard let (tx, address, port) = try? STUNBinding.parseResponse(bytes) else { return }
        let now = now()
        state.withLock { s in
            guard let pending = s.stunPending.removeValue(forKey: tx), pending.server == source else { return }
            // Retransmissions share the server: one answer per server is enough.
            guard !s.stunAnswers.contains(where: { $0.server == source }) else { return }
            s.stunAnswers.append((pending.region, source, AddrPort(address: address, port: port), now - pending.sentAt))
        }
    }
}
