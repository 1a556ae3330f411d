// MagicDNS in the node: the resolver listening on 100.100.100.100 and fd7a:115c:a1e0::53 (addresses the
// router puts on the loopback interface, so the host's own stack carries UDP and TCP to it, and never uses
// them as the source of packets into the tunnel), its configuration
// rebuilt from the network map, and the host pointed at it (HostDNS) only while it answers.

import Foundation
import NIOCore
import WarrenDNS
import WarrenDNSServer
import WarrenLocalAPI
import WarrenNetMap
import WarrenPacket

extension WarrenNode {
    /// Where MagicDNS listens: the options' addresses (tests), else quad-100 on the TUN.
    var dnsListenAddresses: [SocketAddress] {
        if let configured = options.dnsListenAddresses { return configured }
        guard options.router == nil else { return [] }
        return [try? SocketAddress(ipAddress: "\(OSDNSConfig.quad100V4)", port: 53),
                try? SocketAddress(ipAddress: "\(OSDNSConfig.quad100V6)", port: 53)].compactMap { $0 }
    }

    /// The addresses the router adds to the loopback interface for MagicDNS (none with an in-memory router).
    var dnsInterfaceAddresses: [IPPrefix] {
        options.router == nil && options.dnsListenAddresses == nil ? LinuxRouter.serviceAddresses : []
    }

    /// After the router has applied: starts MagicDNS when it is not running, feeds it the map, and
    /// points the host at it (or puts the host back).
    func reconcileDNS(prefs: Prefs) {
        var config = netmap.magicDNSConfig(prefs: prefs, hostResolvers: hostDNS.hostResolvers())
        config.tunnelRoutes = appliedRouter.routes.filter { !$0.isDefaultRoute }
        if let server = dnsServer {
            if server.config != config { server.update(config) }
            applyHostDNS(netmap.osDNSConfig(prefs: prefs))
            return
        }
        let addresses = dnsListenAddresses
        guard !addresses.isEmpty, !dnsStarting, !stopped else { return }
        dnsStarting = true
        let options = DNSServer.Options(socketMark: socketMark)
        let logger = self.logger
        Task {
            do {
                let server = try await DNSServer.start(config: config, listeningOn: addresses, options: options, logger: logger)
                await self.dnsServerStarted(server)
            } catch {
                self.dnsServerFailed(error)
            }
        }
    }

    func dnsServerStarted(_ server: DNSServer) async {
        dnsStarting = false
        guard !stopped, !appliedRouter.localAddresses.isEmpty || options.router != nil else {
            await server.close()
            return
        }
        dnsServer = server
        health.removeAll { $0.hasPrefix("dns:") }
        logger.info("MagicDNS on \(server.boundAddresses.map { "\($0.transport) \($0.address)" }.joined(separator: ", "))")
        reconcileDNS(prefs: persisted.prefs)
    }

    func dnsServerFailed(_ error: any Error) {
        dnsStarting = false
        logger.error("MagicDNS: \(error)")
        health.removeAll { $0.hasPrefix("dns:") }
        health.append("dns: \(error)")
    }

    /// Points the host at MagicDNS (`config`), or puts its own configuration back (nil).
    func applyHostDNS(_ config: OSDNSConfig?) {
        guard config != appliedHostDNS || !hostDNSApplied else { return }
        do {
            try hostDNS.apply(config)
            appliedHostDNS = config
            hostDNSApplied = true
            health.removeAll { $0.hasPrefix("host DNS:") }
            if let config {
                logger.info("host DNS (\(hostDNS.mode)): nameservers \(config.nameservers.map(\.description).joined(separator: " ")), search \(config.searchDomains.joined(separator: " "))")
            }
        } catch {
            logger.error("host DNS: \(error)")
            health.removeAll { $0.hasPrefix("host DNS:") }
            health.append("host DNS: \(error)")
        }
    }

    /// Stops MagicDNS and puts the host's DNS back (down, logout, exit).
    func stopDNS() async {
        applyHostDNS(nil)
        appliedHostDNS = nil
        hostDNSApplied = false
        if let server = dnsServer {
            dnsServer = nil
            await server.close()
        }
    }

    // MARK: LocalAPI

    public func dnsQuery(name: String, type: String) async throws -> DNSQueryResponse {
        guard let server = dnsServer, let address = server.boundAddresses.first(where: { $0.transport == .udp })?.address else {
            throw LocalAPIError(503, "MagicDNS is not running")
        }
        let typeText = type.isEmpty ? "A" : type.uppercased()
        guard let recordType = DNSRecordType(typeText) else { throw LocalAPIError(400, "unknown DNS record type \(type)") }
        let question: DNSName
        do {
            question = try DNSName(name.hasSuffix(".") ? name : name + ".")
        } catch {
            throw LocalAPIError(400, "invalid DNS name \(name.debugDescription): \(error)")
        }
        var query = DNSMessage(header: DNSHeader(id: UInt16.random(in: 0...UInt16.max), recursionDesired: true),
                               questions: [DNSQuestion(name: question, type: recordType)])
        query.edns = EDNS()
        let decision = MagicDNSResolver(config: server.config).decide(query)
        var resolvers: [String] = []
        if case .forward(let upstreams) = decision { resolvers = upstreams.map(\.description) }
        do {
            let response = try await DNSClient(socketMark: socketMark).query(query, server: address)
            return DNSQueryResponse(bytes: Data(try response.encoded()), resolvers: resolvers)
        } catch {
            throw LocalAPIError(502, "query for \(name) failed: \(error)")
        }
    }

    public func dnsStatus() async throws -> DNSStatus {
        let prefs = persisted.prefs
        let dns = netmap.dnsConfig
        let os = netmap.osDNSConfig(prefs: prefs)
        let applied = hostDNSApplied ? appliedHostDNS : nil
        var routes: [String: [String]] = [:]
        for (domain, resolvers) in dns?.routes ?? [:] { routes[domain] = (resolvers ?? []).compactMap(\.addr) }
        return DNSStatus(
            acceptDNS: prefs.acceptDNS, magicDNS: dns?.proxied == true,
            tailnetDomain: netmap.domain.hasSuffix(".") ? String(netmap.domain.dropLast()) : netmap.domain,
            listening: dnsServer?.boundAddresses.map { "\($0.transport) \($0.address)" } ?? [],
            resolvers: (dns?.resolvers ?? []).compactMap(\.addr), splitDNSRoutes: routes,
            searchDomains: dns?.domains ?? [], extraRecords: (dns?.extraRecords ?? []).map(\.name),
            hostResolvers: hostDNS.hostResolvers().map(\.description), hostMode: hostDNS.mode,
            osNameservers: applied.map { $0.nameservers.map(\.description) } ?? (os == nil ? nil : []),
            osSearchDomains: applied?.searchDomains, osMatchDomains: applied?.matchDomains)
    }
}
