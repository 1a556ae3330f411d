// The hand-written writers of the types a map carries. Each writes its members in ascending order of
// the UTF-8 bytes of the JSON names (uppercase before "_" before lowercase), with exactly the
// omission rules of its `Encodable` conformance: nil optionals left out, custom `encode(to:)` rules
// (DERPMap, DERPHomeParams, PingRequest) repeated here. A field added to one of these structs must be
// added here too; TailcfgJSONWriterTests counts the stored properties to catch a forgotten one.

import Foundation

extension Data: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) { writer.base64(self) }
}

extension MapResponse: TailcfgJSONWritable {
    public func writeJSON(to writer: inout TailcfgJSONWriter) throws {
        try writeJSON(to: &writer) { node, writer in try node.writeJSON(to: &writer) }
    }

    /// Writes the response, with `peer` writing each element of `Peers` and `PeersChanged` (a cache
    /// of encoded nodes substitutes its bytes there; it must write what `Node.writeJSON` writes).
    public func writeJSON(to w: inout TailcfgJSONWriter,
                          peer: (borrowing Node, inout TailcfgJSONWriter) throws -> Void) throws {
        func peerList(_ name: StaticString, _ nodes: [Node]?, _ w: inout TailcfgJSONWriter) throws {
            guard let nodes else { return }
            w.key(name)
            w.beginArray()
            // A buffer and a borrowing parameter: no copy of each (large) Node.
            try nodes.withUnsafeBufferPointer { buffer in
                for i in buffer.indices { try peer(buffer[i], &w) }
            }
            w.endArray()
        }
        w.beginObject()
        try w.fieldIfPresent("ClientVersion", clientVersion)
        try w.fieldIfPresent("CollectServices", collectServices)
        try w.fieldIfPresent("ControlDialPlan", controlDialPlan)
        try w.fieldIfPresent("ControlTime", controlTime)
        try w.fieldIfPresent("DERPMap", derpMap)
        try w.fieldIfPresent("DNSConfig", dnsConfig)
        try w.fieldIfPresent("Debug", debug)
        try w.fieldIfPresent("DisplayMessages", displayMessages)
        try w.fieldIfPresent("Domain", domain)
        try w.fieldIfPresent("DomainDataPlaneAuditLogID", domainDataPlaneAuditLogID)
        try w.fieldIfPresent("Health", health)
        try w.fieldIfPresent("KeepAlive", keepAlive)
        try w.fieldIfPresent("MapSessionHandle", mapSessionHandle)
        try w.fieldIfPresent("Node", node)
        try w.fieldIfPresent("OnlineChange", onlineChange)
        try w.fieldIfPresent("PacketFilter", packetFilter)
        try w.fieldIfPresent("PacketFilters", packetFilters)
        try w.fieldIfPresent("PeerSeenChange", peerSeenChange)
        try peerList("Peers", peers, &w)
        try peerList("PeersChanged", peersChanged, &w)
        try w.fieldIfPresent("PeersChangedPatch", peersChangedPatch)
        try w.fieldIfPresent("PeersRemoved", peersRemoved)
        try w.fieldIfPresent("PingRequest", pingRequest)
        try w.fieldIfPresent("PopBrowserURL", popBrowserURL)
        try w.fieldIfPresent("SSHPolicy", sshPolicy)
        try w.fieldIfPresent("Seq", seq)
        try w.fieldIfPresent("TKAInfo", tkaInfo)
        try w.fieldIfPresent("UserProfiles", userProfiles)
        w.endObject()
    }
}

extension PingRequest: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("IP", ip)
        try w.fieldIfPresent("Log", log)
        if let payload, !payload.isEmpty {
            w.key("Payload")
            w.base64(payload)
        }
        try w.fieldIfPresent("Types", types)
        try w.field("URL", url)
        try w.fieldIfPresent("URLIsNoise", urlIsNoise)
        w.endObject()
    }
}

extension DNSConfig: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("CertDomains", certDomains)
        try w.fieldIfPresent("Domains", domains)
        try w.fieldIfPresent("ExitNodeFilteredSet", exitNodeFilteredSet)
        try w.fieldIfPresent("ExtraRecords", extraRecords)
        try w.fieldIfPresent("FallbackResolvers", fallbackResolvers)
        try w.fieldIfPresent("Nameservers", nameservers)
        try w.fieldIfPresent("Proxied", proxied)
        try w.fieldIfPresent("Resolvers", resolvers)
        try w.fieldIfPresent("Routes", routes)
        w.endObject()
    }
}

extension DNSResolver: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("Addr", addr)
        try w.fieldIfPresent("BootstrapResolution", bootstrapResolution)
        try w.fieldIfPresent("UseWithExitNode", useWithExitNode)
        w.endObject()
    }
}

extension DNSRecord: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.field("Name", name)
        try w.fieldIfPresent("Type", type)
        try w.field("Value", value)
        w.endObject()
    }
}

extension Node: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("Addresses", addresses)
        try w.fieldIfPresent("AllowedIPs", allowedIPs)
        try w.fieldIfPresent("Cap", cap)
        try w.fieldIfPresent("CapMap", capMap)
        try w.fieldIfPresent("Capabilities", capabilities)
        try w.fieldIfPresent("ComputedName", computedName)
        try w.fieldIfPresent("ComputedNameWithHost", computedNameWithHost)
        try w.fieldIfPresent("Created", created)
        try w.fieldIfPresent("DERP", legacyDERP)
        try w.fieldIfPresent("DataPlaneAuditLogID", dataPlaneAuditLogID)
        try w.fieldIfPresent("DiscoKey", discoKey)
        try w.fieldIfPresent("Endpoints", endpoints)
        try w.fieldIfPresent("ExitNodeDNSResolvers", exitNodeDNSResolvers)
        try w.fieldIfPresent("Expired", expired)
        try w.fieldIfPresent("HomeDERP", homeDERP)
        try w.fieldIfPresent("Hostinfo", hostinfo)
        try w.field("ID", id)
        try w.fieldIfPresent("IsJailed", isJailed)
        try w.fieldIfPresent("IsWireGuardOnly", isWireGuardOnly)
        try w.field("Key", key)
        try w.fieldIfPresent("KeyExpiry", keyExpiry)
        try w.fieldIfPresent("KeySignature", keySignature)
        try w.fieldIfPresent("LastSeen", lastSeen)
        try w.fieldIfPresent("Machine", machine)
        try w.fieldIfPresent("MachineAuthorized", machineAuthorized)
        try w.field("Name", name)
        try w.fieldIfPresent("Online", online)
        try w.fieldIfPresent("PrimaryRoutes", primaryRoutes)
        try w.fieldIfPresent("SelfNodeV4MasqAddrForThisPeer", selfNodeV4MasqAddrForThisPeer)
        try w.fieldIfPresent("SelfNodeV6MasqAddrForThisPeer", selfNodeV6MasqAddrForThisPeer)
        try w.fieldIfPresent("Sharer", sharer)
        try w.field("StableID", stableID)
        try w.fieldIfPresent("Tags", tags)
        try w.fieldIfPresent("UnsignedPeerAPIOnly", unsignedPeerAPIOnly)
        try w.field("User", user)
        w.endObject()
    }
}

extension PeerChange: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("Cap", cap)
        try w.fieldIfPresent("CapMap", capMap)
        try w.fieldIfPresent("DERPRegion", derpRegion)
        try w.fieldIfPresent("DiscoKey", discoKey)
        try w.fieldIfPresent("Endpoints", endpoints)
        try w.fieldIfPresent("Key", key)
        try w.fieldIfPresent("KeyExpiry", keyExpiry)
        try w.fieldIfPresent("KeySignature", keySignature)
        try w.fieldIfPresent("LastSeen", lastSeen)
        try w.field("NodeID", nodeID)
        try w.fieldIfPresent("Online", online)
        w.endObject()
    }
}

extension UserProfile: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.field("DisplayName", displayName)
        try w.fieldIfPresent("Groups", groups)
        try w.field("ID", id)
        try w.field("LoginName", loginName)
        try w.fieldIfPresent("ProfilePicURL", profilePicURL)
        w.endObject()
    }
}

// MARK: Hostinfo

extension PreservingUnknownFields: TailcfgJSONWritable where Known: TailcfgJSONWritable {
    /// The known fields and the unknown members as one object in name order (a name that is also a
    /// known field is not written twice, as in `encode(to:)`).
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        if unknownFields.isEmpty {
            try known.writeJSON(to: &w)
            return
        }
        let extras = unknownFields.filter { !Known.knownFieldNames.contains($0.key) }
            .sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            .map { (name: $0.key, value: $0.value) }
        try w.writeObject(mergingSortedMembers: extras) { try known.writeJSON(to: &$0) }
    }
}

extension HostinfoFields: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("AllowsUpdate", allowsUpdate)
        try w.fieldIfPresent("App", app)
        try w.fieldIfPresent("AppConnector", appConnector)
        try w.fieldIfPresent("BackendLogID", backendLogID)
        try w.fieldIfPresent("Cloud", cloud)
        try w.fieldIfPresent("Container", container)
        try w.fieldIfPresent("Desktop", desktop)
        try w.fieldIfPresent("DeviceModel", deviceModel)
        try w.fieldIfPresent("Distro", distro)
        try w.fieldIfPresent("DistroCodeName", distroCodeName)
        try w.fieldIfPresent("DistroVersion", distroVersion)
        try w.fieldIfPresent("Env", env)
        try w.fieldIfPresent("ExitNodeID", exitNodeID)
        try w.fieldIfPresent("FrontendLogID", frontendLogID)
        try w.fieldIfPresent("GoArch", goArch)
        try w.fieldIfPresent("GoArchVar", goArchVar)
        try w.fieldIfPresent("GoVersion", goVersion)
        try w.fieldIfPresent("Hostname", hostname)
        try w.fieldIfPresent("IPNVersion", ipnVersion)
        try w.fieldIfPresent("IngressEnabled", ingressEnabled)
        try w.fieldIfPresent("Location", location)
        try w.fieldIfPresent("Machine", machine)
        try w.fieldIfPresent("NetInfo", netInfo)
        try w.fieldIfPresent("NoLogsNoSupport", noLogsNoSupport)
        try w.fieldIfPresent("OS", os)
        try w.fieldIfPresent("OSVersion", osVersion)
        try w.fieldIfPresent("Package", package)
        try w.fieldIfPresent("PeerRelay", peerRelay)
        try w.fieldIfPresent("PushDeviceToken", pushDeviceToken)
        try w.fieldIfPresent("RequestTags", requestTags)
        try w.fieldIfPresent("RoutableIPs", routableIPs)
        try w.fieldIfPresent("Services", services)
        try w.fieldIfPresent("ServicesHash", servicesHash)
        try w.fieldIfPresent("ShareeNode", shareeNode)
        try w.fieldIfPresent("ShieldsUp", shieldsUp)
        try w.fieldIfPresent("StateEncrypted", stateEncrypted)
        try w.fieldIfPresent("Userspace", userspace)
        try w.fieldIfPresent("UserspaceRouter", userspaceRouter)
        try w.fieldIfPresent("WireIngress", wireIngress)
        try w.fieldIfPresent("WoLMACs", wolMACs)
        try w.fieldIfPresent("sshHostKeys", sshHostKeys)
        w.endObject()
    }
}

extension HostService: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("Description", description)
        try w.field("Port", port)
        try w.field("Proto", proto)
        w.endObject()
    }
}

extension HostLocation: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("City", city)
        try w.fieldIfPresent("CityCode", cityCode)
        try w.fieldIfPresent("Country", country)
        try w.fieldIfPresent("CountryCode", countryCode)
        try w.fieldIfPresent("Latitude", latitude)
        try w.fieldIfPresent("Longitude", longitude)
        try w.fieldIfPresent("Priority", priority)
        w.endObject()
    }
}

extension NetInfo: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("DERPLatency", derpLatency)
        try w.fieldIfPresent("FirewallMode", firewallMode)
        try w.fieldIfPresent("HavePortMap", havePortMap)
        try w.fieldIfPresent("LinkType", linkType)
        try w.fieldIfPresent("MappingVariesByDestIP", mappingVariesByDestIP)
        try w.fieldIfPresent("OSHasIPv6", osHasIPv6)
        try w.fieldIfPresent("PCP", pcp)
        try w.fieldIfPresent("PMP", pmp)
        try w.fieldIfPresent("PreferredDERP", preferredDERP)
        try w.fieldIfPresent("UPnP", upnp)
        try w.fieldIfPresent("WorkingICMPv4", workingICMPv4)
        try w.fieldIfPresent("WorkingIPv6", workingIPv6)
        try w.fieldIfPresent("WorkingUDP", workingUDP)
        w.endObject()
    }
}

// MARK: DERP map

/// Int-keyed maps are objects with decimal keys; the keys sort as text ("10" before "9").
private func writeDecimalKeyed<V: TailcfgJSONWritable>(_ map: [Int: V], to w: inout TailcfgJSONWriter) throws {
    w.beginObject()
    for (name, value) in map.map({ (String($0.key), $0.value) }).sorted(by: { $0.0.utf8.lexicographicallyPrecedes($1.0.utf8) }) {
        w.key(name)
        try value.writeJSON(to: &w)
    }
    w.endObject()
}

extension DERPMap: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("HomeParams", homeParams)
        w.key("Regions")
        try writeDecimalKeyed(regions, to: &w)
        if omitDefaultRegions == true { try w.field("omitDefaultRegions", true) }
        w.endObject()
    }
}

extension DERPHomeParams: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        if let regionScore, !regionScore.isEmpty {
            w.key("RegionScore")
            try writeDecimalKeyed(regionScore, to: &w)
        }
        w.endObject()
    }
}

extension DERPRegion: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("Avoid", avoid)
        try w.fieldIfPresent("Latitude", latitude)
        try w.fieldIfPresent("Longitude", longitude)
        try w.fieldIfPresent("NoMeasureNoHome", noMeasureNoHome)
        try w.fieldIfPresent("Nodes", nodes)
        try w.field("RegionCode", regionCode)
        try w.field("RegionID", regionID)
        try w.field("RegionName", regionName)
        w.endObject()
    }
}

extension DERPNode: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("CanPort80", canPort80)
        try w.fieldIfPresent("CertName", certName)
        try w.fieldIfPresent("DERPPort", derpPort)
        try w.field("HostName", hostName)
        try w.fieldIfPresent("IPv4", ipv4)
        try w.fieldIfPresent("IPv6", ipv6)
        try w.fieldIfPresent("InsecureForTests", insecureForTests)
        try w.field("Name", name)
        try w.field("RegionID", regionID)
        try w.fieldIfPresent("STUNOnly", stunOnly)
        try w.fieldIfPresent("STUNPort", stunPort)
        try w.fieldIfPresent("STUNTestIP", stunTestIP)
        w.endObject()
    }
}

// MARK: Packet filter

extension FilterRule: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("CapGrant", capGrant)
        try w.fieldIfPresent("DstPorts", dstPorts)
        try w.fieldIfPresent("IPProto", ipProto)
        try w.field("SrcIPs", srcIPs)
        w.endObject()
    }
}

extension NetPortRange: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.field("IP", ip)
        try w.field("Ports", ports)
        w.endObject()
    }
}

extension PortRange: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.field("First", first)
        try w.field("Last", last)
        w.endObject()
    }
}

extension CapGrant: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("CapMap", capMap)
        try w.field("Dsts", dsts)
        w.endObject()
    }
}

// MARK: SSH policy (JSON names as Go's: lowercase)

extension SSHPolicy: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.field("rules", rules)
        w.endObject()
    }
}

extension SSHRule: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("acceptEnv", acceptEnv)
        try w.fieldIfPresent("action", action)
        try w.field("principals", principals)
        try w.fieldIfPresent("ruleExpires", ruleExpires)
        try w.field("sshUsers", sshUsers)
        w.endObject()
    }
}

extension SSHPrincipal: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("any", any)
        try w.fieldIfPresent("node", node)
        try w.fieldIfPresent("nodeIP", nodeIP)
        try w.fieldIfPresent("userLogin", userLogin)
        w.endObject()
    }
}

extension SSHAction: TailcfgJSONWritable {
    public func writeJSON(to w: inout TailcfgJSONWriter) throws {
        w.beginObject()
        try w.fieldIfPresent("accept", accept)
        try w.fieldIfPresent("allowAgentForwarding", allowAgentForwarding)
        try w.fieldIfPresent("allowLocalPortForwarding", allowLocalPortForwarding)
        try w.fieldIfPresent("allowRemotePortForwarding", allowRemotePortForwarding)
        try w.fieldIfPresent("holdAndDelegate", holdAndDelegate)
        try w.fieldIfPresent("message", message)
        try w.fieldIfPresent("reject", reject)
        try w.fieldIfPresent("sessionDuration", sessionDuration)
        w.endObject()
    }
}
