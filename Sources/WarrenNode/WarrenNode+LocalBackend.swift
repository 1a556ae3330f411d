// The LocalAPI side of the node: what `warren up`, `down`, `logout`, `status`, `ping`, `whois` and
// `netcheck` ask for.

import Foundation
import WarrenLinux
import TailscaleKeys
import WarrenLocalAPI
import WarrenMagicsock
import WarrenNetMap
import WarrenPacket
import WarrenTailcfg
import WireGuardDevice
import WireGuardProtocol

extension WarrenNode {
    // MARK: up, down, logout

    public func up(_ request: UpRequest) async throws -> UpResponse {
        guard !stopped else { throw LocalAPIError(409, "warrend is shutting down") }
        var prefs = persisted.prefs
        if let server = request.loginServer, !server.isEmpty {
            guard let url = URL(string: server), let scheme = url.scheme, scheme == "http" || scheme == "https", url.host != nil else {
                throw LocalAPIError(400, "invalid --login-server URL: \(server)")
            }
            let normalized = server.hasSuffix("/") ? String(server.dropLast()) : server
            if normalized != prefs.loginServer {
                // Another control server: this node key is not registered there.
                prefs.loginServer = normalized
                persisted.registered = false
            }
        }
        guard !prefs.loginServer.isEmpty else {
            throw LocalAPIError(400, "no control server: pass --login-server URL")
        }
        if request.reset {
            let server = prefs.loginServer
            prefs = Prefs(loginServer: server)
        }
        if let hostname = request.hostname { prefs.hostname = hostname }
        prefs.shieldsUp = request.shieldsUp
        prefs.acceptRoutes = request.acceptRoutes
        prefs.acceptDNS = request.acceptDNS
        prefs.noSNAT = !request.snatSubnetRoutes
        do {
            prefs.advertiseRoutes = try Prefs.advertisedRoutes(request.advertiseRoutes, exitNode: request.advertiseExitNode)
        } catch {
            throw LocalAPIError(400, "\(error)")
        }
        try selectExitNode(request.exitNode, into: &prefs)
        if prefs.advertisesExitNode && prefs.usesExitNode {
            throw LocalAPIError(400, "cannot advertise an exit node and use an exit node at the same time")
        }
        if request.exitNodeAllowLANAccess && !prefs.usesExitNode {
            throw LocalAPIError(400, "--exit-node-allow-lan-access can only be used with --exit-node")
        }
        prefs.exitNodeAllowLANAccess = request.exitNodeAllowLANAccess
        prefs.wantRunning = true
        let relogin = request.forceReauth || !persisted.registered || request.authKey != nil
        let changedHostinfo = prefs.hostname != persisted.prefs.hostname || prefs.shieldsUp != persisted.prefs.shieldsUp
            || prefs.advertiseRoutes != persisted.prefs.advertiseRoutes
        persisted.prefs = prefs
        save()
        if machine.apply(.wantRunning(true)) { stateChanged() }
        if control == nil || relogin {
            if request.forceReauth { persisted.registered = false }
            startControl(authKey: request.authKey)
        } else if changedHostinfo {
            await pushHostinfo()
        }
        // Preferences such as shields-up and accepted routes take effect on the map we have now.
        reconcile()
        if request.wait == false { return upResponse() }
        // Wait for Running, a login URL, or device approval.
        let deadline = ContinuousClock.now + options.upTimeout
        while !stopped {
            let state = machine.state
            if state == .running || state == .needsMachineAuth || (state == .needsLogin && machine.authURL != nil) {
                break
            }
            let left = deadline - ContinuousClock.now
            if left <= .zero { break }
            await waitForStateChange(timeout: min(left, .seconds(1)))
        }
        return upResponse()
    }

    /// Puts what the user typed after `--exit-node` into `prefs`: "" clears it, `auto:any` lets the
    /// node choose, an IP is kept as is until the map names its node, a name must match a peer that
    /// offers an exit.
    func selectExitNode(_ text: String, into prefs: inout Prefs) throws {
        let value = text.trimmingCharacters(in: .whitespaces)
        prefs.exitNodeIP = nil
        prefs.autoExitNode = false
        if value.isEmpty {
            prefs.exitNodeID = nil
        } else if value == "auto:any" {
            prefs.autoExitNode = true
            // Keep the current choice while it stays good; reconcile picks one otherwise.
            if let id = prefs.exitNodeID, netmap.peers.first(where: { $0.stableID == id })?.offersExitNode != true {
                prefs.exitNodeID = nil
            }
        } else if value.hasPrefix("auto:") {
            throw LocalAPIError(400, "invalid --exit-node \(value.debugDescription): the only automatic choice is auto:any")
        } else if let ip = IPAddress(value), netmap.peer(address: ip) == nil {
            // Not in the map (yet): keep the address; the node is used once the map carries it.
            prefs.exitNodeID = nil
            prefs.exitNodeIP = ip
        } else {
            switch netmap.exitNode(named: value) {
            case .success(let node): prefs.exitNodeID = node.stableID
            case .failure(let error): throw LocalAPIError(400, "invalid --exit-node: \(error)")
            }
        }
    }

    public func suggestExitNode() async throws -> ExitNodeSuggestion {
        guard let node = netmap.suggestExitNode(current: persisted.prefs.exitNodeID, regionLatency: regionLatencySeconds) else {
            throw LocalAPIError(404, "no exit node available: no peer offers one to this node")
        }
        return ExitNodeSuggestion(id: node.stableID, name: node.name.isEmpty ? node.shortName : node.name)
    }

    private func upResponse() -> UpResponse {
        UpResponse(backendState: machine.state, authURL: machine.authURL)
    }

    public func down() async throws {
        persisted.prefs.wantRunning = false
        save()
        stopControl()
        await clearEngines()
        netmap = NetworkMap()
        if machine.apply(.wantRunning(false)) { stateChanged() }
    }

    public func logout() async throws {
        if let control {
            do {
                try await control.logout()
            } catch {
                logger.warning("logout: \(error)")
            }
        }
        stopControl()
        await clearEngines()
        netmap = NetworkMap()
        if persisted.registered { rotateNodeKey() }
        persisted.prefs.wantRunning = false
        save()
        if machine.apply(.loggedOut) { stateChanged() }
        _ = machine.apply(.wantRunning(false))
    }

    // MARK: status

    public func status() async -> IPNStatus {
        let deviceStatus = device.status()
        var byKey: [String: DevicePeerStatus] = [:]
        for p in deviceStatus.peers { byKey[p.publicKey.base64] = p }
        let suffix = netmap.domain
        var peers: [String: WarrenLocalAPI.PeerStatus] = [:]
        var users: [String: WarrenLocalAPI.UserProfile] = [:]
        func addUser(_ id: Int64) {
            guard users["\(id)"] == nil, let profile = netmap.userProfiles[id] else { return }
            users["\(id)"] = WarrenLocalAPI.UserProfile(id: profile.id, loginName: profile.loginName,
                                                        displayName: profile.displayName,
                                                        profilePicURL: profile.profilePicURL ?? "")
        }
        let now = Date()
        for node in netmap.peers {
            let wg = (try? WireGuardPublicKey(rawRepresentation: node.key.rawRepresentation)).flatMap { byKey[$0.base64] }
            let path = magic.status(of: node.key)
            var s = peerStatus(node)
            s.curAddr = path?.currentAddress?.description ?? ""
            s.relay = regionCode(path?.homeDERP ?? node.homeDERP ?? 0)
            s.rxBytes = Int64(clamping: wg?.rxBytes ?? 0)
            s.txBytes = Int64(clamping: wg?.txBytes ?? 0)
            if let wg, wg.lastHandshakeSeconds > 0 {
                s.lastHandshake = Date(timeIntervalSince1970: Double(wg.lastHandshakeSeconds) + Double(wg.lastHandshakeNanoseconds) * 1e-9)
                s.active = now.timeIntervalSince(s.lastHandshake) < 180 && (wg.rxBytes > 0 || wg.txBytes > 0)
            }
            s.inMagicSock = path != nil
            s.inEngine = wg != nil
            peers[node.key.description] = s
            addUser(node.user)
        }
        var selfStatus: WarrenLocalAPI.PeerStatus?
        if let me = netmap.selfNode {
            var s = peerStatus(me)
            s.online = control != nil
            s.relay = regionCode(magic.homeDERP)
            s.addrs = magic.endpoints.map(\.description)
            s.inNetworkMap = true
            s.inMagicSock = true
            s.inEngine = true
            selfStatus = s
            addUser(me.user)
        }
        let tailnet = suffix.isEmpty ? nil : TailnetStatus(name: suffix, magicDNSSuffix: suffix,
                                                           magicDNSEnabled: netmap.dnsConfig?.proxied ?? false)
        return IPNStatus(
            version: Self.version, tun: true, backendState: machine.state, haveNodeKey: true,
            authURL: machine.authURL ?? "", tailscaleIPs: (netmap.selfNode?.addresses ?? []).map { "\($0.address)" },
            selfStatus: selfStatus, health: health, magicDNSSuffix: suffix, currentTailnet: tailnet,
            peer: peers, user: users,
            exitNodeStatus: netmap.exitNode(prefs: persisted.prefs).map {
                ExitNodeStatus(id: $0.stableID, online: $0.online ?? false, tailscaleIPs: ($0.addresses ?? []).map(\.description))
            })
    }

    func peerStatus(_ node: Node) -> WarrenLocalAPI.PeerStatus {
        let host = node.hostinfo?.known.hostname ?? String(node.name.split(separator: ".").first ?? "")
        return WarrenLocalAPI.PeerStatus(
            id: node.stableID.isEmpty ? "\(node.id)" : node.stableID, publicKey: node.key.description, hostName: host,
            dnsName: node.name, os: node.hostinfo?.known.os ?? "", userID: node.user,
            tailscaleIPs: (node.addresses ?? []).map { "\($0.address)" },
            allowedIPs: (node.allowedIPs ?? node.addresses)?.map(\.description),
            primaryRoutes: node.primaryRoutes?.map(\.description), tags: node.tags,
            addrs: (node.endpoints ?? []).map(\.description),
            created: node.created.map(\.date) ?? .goZero,
            lastSeen: node.lastSeen.map(\.date) ?? .goZero,
            online: node.online ?? false, exitNode: persisted.prefs.selectsExitNode(node),
            exitNodeOption: node.offersExitNode, inNetworkMap: true, expired: node.expired ?? false,
            keyExpiry: node.keyExpiry.flatMap { $0.isGoZero ? nil : $0.date })
    }

    func regionCode(_ region: Int) -> String {
        guard region != 0 else { return "" }
        return netmap.derpMap?.regions[region]?.regionCode ?? "\(region)"
    }

    // MARK: ping, whois, netcheck

    public func ping(ip: String, type: PingType, size: Int) async throws -> PingResult {
        guard let address = IPAddress(ip) else { throw LocalAPIError(400, "invalid IP address: \(ip)") }
        if netmap.selfNode?.addresses?.contains(where: { $0.address == address }) == true {
            return PingResult(ip: ip, nodeIP: ip, nodeName: shortName(netmap.selfNode!), isLocalIP: true)
        }
        guard let peer = netmap.peer(address: address) else {
            throw LocalAPIError(404, "no peer has IP \(ip)")
        }
        let nodeIP = peer.addresses?.first(where: { $0.address.version == address.version }).map { "\($0.address)" } ?? ip
        switch type {
        case .disco:
            break
        case .icmp:
            return await icmpPing(address, ip: ip, nodeIP: nodeIP, peer: peer, tsmp: false)
        case .tsmp:
            return await icmpPing(address, ip: ip, nodeIP: nodeIP, peer: peer, tsmp: true)
        case .peerAPI:
            return await peerAPIPing(peer, address: address, ip: ip, nodeIP: nodeIP)
        }
        guard let result = await magic.ping(peer.key, timeout: .seconds(5)) else {
            return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), err: "timeout waiting for ping reply")
        }
        return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), latencySeconds: result.latency.seconds,
                          endpoint: result.endpoint?.description ?? "", derpRegionID: result.derpRegion ?? 0,
                          derpRegionCode: result.derpRegion.map(regionCode) ?? "")
    }

    /// An ICMP echo (or a TSMP ping) through the system's stack and the tunnel; the path is magicsock's
    /// at the time.
    func icmpPing(_ address: IPAddress, ip: String, nodeIP: String, peer: Node, tsmp: Bool) async -> PingResult {
        #if os(Linux)
        icmpSequence &+= 1
        let sequence = icmpSequence
        let identifier = UInt16(truncatingIfNeeded: getpid())
        var rng = SystemRandomNumberGenerator()
        let data = (0..<8).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let outcome: Result<UInt64?, any Error> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: Result {
                    tsmp ? try TSMP.ping(address, data: data, timeoutMilliseconds: 5_000)
                         : try ICMPEcho.ping(address, identifier: identifier, sequence: sequence, timeoutMilliseconds: 5_000)
                })
            }
        }
        let path = magic.status(of: peer.key)
        let region = path?.currentAddress == nil ? (path?.homeDERP ?? 0) : 0
        switch outcome {
        case .success(let nanoseconds?):
            return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), latencySeconds: Double(nanoseconds) / 1e9,
                              endpoint: path?.currentAddress?.description ?? "", derpRegionID: region,
                              derpRegionCode: region == 0 ? "" : regionCode(region))
        case .success(nil):
            return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), err: "timeout waiting for ping reply")
        case .failure(let error):
            return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), err: "\(error)")
        }
        #else
        return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), err: "ICMP pings need Linux")
        #endif
    }

    func shortName(_ node: Node) -> String {
        let first = node.name.split(separator: ".").first.map(String.init) ?? ""
        return first.isEmpty ? (node.hostinfo?.known.hostname ?? "") : first
    }

    public func whois(_ address: String) async throws -> WhoIsResponse? {
        let host: String
        if let ap = AddrPort(address) { host = "\(ap.address)" } else { host = address }
        guard let ip = IPAddress(host) else { throw LocalAPIError(400, "invalid address: \(address)") }
        guard let node = netmap.node(address: ip) else { return nil }
        let profile = netmap.userProfile(of: node)
        let user = WarrenLocalAPI.UserProfile(id: profile?.id ?? node.user, loginName: profile?.loginName ?? "",
                                              displayName: profile?.displayName ?? "",
                                              profilePicURL: profile?.profilePicURL ?? "")
        let whoNode = WhoIsNode(id: node.id, stableID: node.stableID, name: node.name, user: node.user,
                                key: node.key.description, addresses: (node.addresses ?? []).map(\.description),
                                allowedIPs: (node.allowedIPs ?? node.addresses ?? []).map(\.description), tags: node.tags,
                                computedName: shortName(node), online: node.online)
        // The capabilities the rules grant this source on us.
        var capMap: [String: [JSONValue]]?
        if let me = netmap.selfNode?.addresses?.first(where: { $0.address.version == ip.version })?.address {
            let caps = tun.capabilities(src: ip, dst: me)
            capMap = caps.isEmpty ? nil : caps
        }
        return WhoIsResponse(node: whoNode, userProfile: user, capMap: capMap)
    }

    public func netcheck() async throws -> WarrenLocalAPI.NetcheckReport {
        let r = await magic.netcheck()
        var regionCodes: [String: String] = [:]
        for (id, region) in netmap.derpMap?.regions ?? [:] { regionCodes["\(id)"] = region.regionCode }
        return WarrenLocalAPI.NetcheckReport(
            udp: r.udp, ipv4: r.ipv4, ipv6: r.ipv6, ipv4CanSend: r.ipv4, ipv6CanSend: r.ipv6,
            mappingVariesByDestIP: r.mappingVariesByDestIP, preferredDERP: r.preferredDERP ?? 0,
            regionLatency: Dictionary(uniqueKeysWithValues: r.regionLatency.map { ("\($0.key)", $0.value.seconds) }),
            regionCodes: regionCodes, globalV4: r.globalV4?.description ?? "", globalV6: r.globalV6?.description ?? "")
    }
}

