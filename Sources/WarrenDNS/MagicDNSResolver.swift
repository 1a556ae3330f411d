// MagicDNS's answer logic, after Tailscale's net/dns/resolver (resolveLocal, resolveLocalReverse,
// the forwarder's choice of upstreams): a query and the configuration in, a decision out (an
// answer, the upstreams to forward to, or nothing). No I/O here; the server does that.

import WarrenPacket

/// What to do with one query.
public enum MagicDNSDecision: Hashable, Sendable {
    /// Send this response (the ID and question are the query's).
    case answer(DNSMessage)
    /// Forward the query to these upstreams, in order (the next one when one times out).
    case forward(to: [DNSUpstream])
    /// Send nothing (a response, or octets too short to answer).
    case drop
}

/// The configuration compiled into lookup tables; built once per configuration change.
public struct MagicDNSResolver: Sendable {
    /// The configuration this resolver answers for.
    public let config: MagicDNSConfig

    struct Entry: Sendable {
        /// The name as configured (what a PTR answer points to).
        var name: DNSName
        var addresses: [IPAddress] = []
        var txt: [[[UInt8]]] = []
        var cname: DNSName?
    }

    private var entries: [DNSName: Entry] = [:]
    private var shortNames: [DNSName: DNSName] = [:]
    private var reverse: [IPAddress: DNSName] = [:]
    private var routes: [DNSName: [DNSUpstream]] = [:]
    private var hostResolvers: [DNSUpstream] = []

    /// The name a reverse lookup of 100.100.100.100 answers (and which resolves to it), as Tailscale.
    public static let serviceName = try! DNSName("magicdns.localhost-tailscale-daemon.")
    /// The payload size this resolver advertises in its OPT records.
    public static let advertisedUDPPayloadSize: UInt16 = 1232

    private static let onion = try! DNSName("onion.")

    /// b., db., r., dr. or lb._dns-sd._udp.<domain> (RFC 6763 §11).
    static func isDNSSDBrowse(_ name: DNSName) -> Bool {
        guard let first = name.firstLabel, first.count <= 2 else { return false }
        let labels = name.labels
        guard labels.count >= 3, bonjourFirstLabels.contains(labels[0].map(DNSName.lower)) else { return false }
        return labels[1].map(DNSName.lower) == Array("_dns-sd".utf8) && labels[2].map(DNSName.lower) == Array("_udp".utf8)
    }
    private static let bonjourFirstLabels: Set<[UInt8]> = Set(["b", "db", "r", "dr", "lb"].map { Array($0.utf8) })

    public init(config: MagicDNSConfig) {
        self.config = config
        // Hosts in a stable order: names under a MagicDNS domain first, then by name.
        func isMagic(_ name: DNSName) -> Bool { config.magicDNSDomains.contains { name.isSubdomain(of: $0) } }
        let hostNames = config.hosts.keys.sorted {
            let (a, b) = (isMagic($0), isMagic($1))
            return a != b ? a : $0.description.lowercased() < $1.description.lowercased()
        }
        for name in hostNames {
            let addresses = config.hosts[name]!
            entries[name, default: Entry(name: name)].addresses += addresses
            for address in addresses where reverse[address] == nil { reverse[address] = name }
        }
        for record in config.extraRecords {
            guard let name = try? DNSName(record.name) else { continue }
            switch record.type.uppercased() {
            case "", "A", "AAAA":
                // As Tailscale: the family comes from the value, whichever of the three types is named.
                guard let address = IPAddress(record.value.trimmingSpaces) else { continue }
                entries[name, default: Entry(name: name)].addresses.append(address)
                if reverse[address] == nil { reverse[address] = name }
            case "TXT":
                let bytes = Array(record.value.utf8)
                let chunks = stride(from: 0, to: max(bytes.count, 1), by: 255).map {
                    Array(bytes[$0..<min($0 + 255, bytes.count)])
                }
                entries[name, default: Entry(name: name)].txt.append(chunks)
            case "CNAME":
                guard let target = try? DNSName(record.value.trimmingSpaces), !target.isRoot else { continue }
                entries[name, default: Entry(name: name)].cname = target
            default:
                continue
            }
        }
        for domain in config.magicDNSDomains + config.searchDomains {
            for name in hostNames where name.parent == domain {
                guard let label = name.firstLabel, let short = try? DNSName(labels: [label]) else { continue }
                if shortNames[short] == nil { shortNames[short] = name }
            }
        }
        routes = config.routes
        for domain in config.magicDNSDomains { routes[domain] = [] }
        // A host whose resolv.conf already pointed at MagicDNS would loop queries back here.
        hostResolvers = config.hostResolvers.filter {
            $0.address != TailnetAddresses.serviceIPv4 && $0.address != TailnetAddresses.serviceIPv6
        }
    }

    // MARK: - Decisions

    /// Decides from the octets of a query: FORMERR when the header reads but the rest does not, a
    /// drop when not even the header does or the message is a response. The parsed query is
    /// returned too (nil when it did not parse).
    public func decide(packet: UnsafeRawBufferPointer) -> (decision: MagicDNSDecision, query: DNSMessage?) {
        do {
            let query = try DNSMessage(buffer: packet)
            return (decide(query), query)
        } catch {
            guard let header = DNSHeader(peeking: packet), !header.isResponse else { return (.drop, nil) }
            let response = DNSMessage(header: DNSHeader(
                id: header.id, isResponse: true, opcode: header.opcode, recursionDesired: header.recursionDesired,
                recursionAvailable: header.recursionDesired, responseCode: .formatError))
            return (.answer(response), nil)
        }
    }

    /// Decides what to do with a parsed query.
    public func decide(_ query: DNSMessage) -> MagicDNSDecision {
        if query.header.isResponse { return .drop }
        guard query.header.opcode == .query else { return .answer(reply(to: query, .notImplemented)) }
        guard query.questions.count == 1 else { return .answer(reply(to: query, .formatError, echo: false)) }
        if let edns = query.edns, edns.version > 0 { return .answer(reply(to: query, .badVersion)) }
        let question = query.questions[0]
        if question.type == .opt { return .answer(reply(to: query, .formatError)) }
        switch localAnswer(question) {
        case .answer(let rcode, let records):
            guard question.class == .internet || question.class == .any else {
                return .answer(reply(to: query, .refused))
            }
            return .answer(reply(to: query, rcode, answers: records))
        case .notOurs:
            let upstreams = upstreams(for: question.name)
            if upstreams.isEmpty { return .answer(reply(to: query, .serverFailure)) }
            return .forward(to: upstreams)
        }
    }

    /// The upstreams a name not answered here goes to: the longest matching split-DNS route with
    /// resolvers, else the global resolvers, else the host's (less MagicDNS's own addresses, which
    /// would loop). Empty when there are none.
    public func upstreams(for name: DNSName) -> [DNSUpstream] {
        if let (_, resolvers) = route(for: name), !resolvers.isEmpty { return resolvers }
        if !config.globalResolvers.isEmpty { return config.globalResolvers }
        return hostResolvers
    }

    /// The longest route suffix containing `name`.
    private func route(for name: DNSName) -> (DNSName, [DNSUpstream])? {
        if routes.isEmpty { return nil }
        var current: DNSName? = name
        while let n = current {
            if let resolvers = routes[n] { return (n, resolvers) }
            current = n.parent
        }
        return nil
    }

    private func isLocal(_ name: DNSName) -> Bool {
        if let (_, resolvers) = route(for: name) { return resolvers.isEmpty }
        return false
    }

    // MARK: - Local answers

    enum LocalResult {
        case answer(DNSResponseCode, [DNSResourceRecord])
        case notOurs
    }

    private func entry(for name: DNSName) -> Entry? {
        if let e = entries[name] { return e }
        if name.labelCount == 1, let full = shortNames[name] { return entries[full] }
        return nil
    }

    func localAnswer(_ question: DNSQuestion) -> LocalResult {
        let name = question.name
        let type = question.type
        // RFC 7686: .onion names never resolve.
        if name.isSubdomain(of: Self.onion) { return .answer(.nameError, []) }
        if name == Self.serviceName {
            let service = Entry(name: name, addresses: [TailnetAddresses.serviceIPv4, TailnetAddresses.serviceIPv6])
            return hostAnswer(owner: name, entry: service, type: type, depth: 0)
        }
        // DNS-SD browsing (RFC 6763 §11) is answered NXDOMAIN and never forwarded, as Tailscale does.
        if Self.isDNSSDBrowse(name) { return .answer(.nameError, []) }
        if type == .a || type == .aaaa || type == .any,
           let via = ViaNames.address(for: name, localDomains: config.magicDNSDomains) {
            // The name exists; it has an IPv6 address only.
            guard type != .a else { return .answer(.noError, []) }
            return .answer(.noError, [.address(name: name, via, ttl: config.ttl)])
        }
        if let address = ReverseName.address(of: name) {
            var lookup = address
            if reverse[address] == nil, let v4 = TailnetAddresses.ipv4(from6: address), reverse[v4] != nil {
                lookup = v4
            }
            let target: DNSName? = address == TailnetAddresses.serviceIPv4 || address == TailnetAddresses.serviceIPv6
                ? Self.serviceName : reverse[lookup]
            if let target {
                guard type == .ptr || type == .any else { return .answer(.noError, []) }
                return .answer(.noError, [DNSResourceRecord(name: name, type: .ptr, ttl: config.ttl, data: .ptr(target))])
            }
            if config.answersTailnetReverseZones,
               TailnetAddresses.ipv4Range.contains(address) || TailnetAddresses.ipv6Range.contains(address) {
                return .answer(.nameError, [])
            }
        }
        if let e = entry(for: name) { return hostAnswer(owner: name, entry: e, type: type, depth: 0) }
        if isLocal(name) { return .answer(.nameError, []) }
        return .notOurs
    }

    private func hostAnswer(owner: DNSName, entry: Entry, type: DNSRecordType, depth: Int) -> LocalResult {
        let ttl = config.ttl
        if let target = entry.cname, entry.addresses.isEmpty, entry.txt.isEmpty {
            let record = DNSResourceRecord(name: owner, type: .cname, ttl: ttl, data: .cname(target))
            if type == .cname { return .answer(.noError, [record]) }
            // Follow the alias when its target is ours too (a few steps at most).
            if depth < 8, let next = self.entry(for: target),
               case .answer(let rcode, let rest) = hostAnswer(owner: target, entry: next, type: type, depth: depth + 1),
               rcode == .noError {
                return .answer(.noError, [record] + rest)
            }
            return .answer(.noError, [record])
        }
        switch type {
        case .a:
            return .answer(.noError, entry.addresses.filter { $0.version == .v4 }.map { .address(name: owner, $0, ttl: ttl) })
        case .aaaa:
            return .answer(.noError, entry.addresses.filter { $0.version == .v6 }.map { .address(name: owner, $0, ttl: ttl) })
        case .txt:
            return .answer(.noError, entry.txt.map { DNSResourceRecord(name: owner, type: .txt, ttl: ttl, data: .txt($0)) })
        case .any:
            return .answer(.noError, entry.addresses.map { .address(name: owner, $0, ttl: ttl) }
                + entry.txt.map { DNSResourceRecord(name: owner, type: .txt, ttl: ttl, data: .txt($0)) })
        case .ns, .soa, .axfr, .ixfr, .hinfo:
            // As Tailscale: types about zones and recursion are not implemented for node names.
            return .answer(.notImplemented, [])
        default:
            // The name exists but has no records of this type: NODATA.
            return .answer(.noError, [])
        }
    }

    /// A response to `query`: its ID, opcode, RD and question (unless `echo` is false),
    /// authoritative, recursion available when desired, and an OPT record when the query had one.
    public func reply(to query: DNSMessage, _ rcode: DNSResponseCode, answers: [DNSResourceRecord] = [],
                      echo: Bool = true) -> DNSMessage {
        var header = DNSHeader(id: query.header.id, isResponse: true, opcode: query.header.opcode,
                               isAuthoritative: true, recursionDesired: query.header.recursionDesired,
                               recursionAvailable: query.header.recursionDesired,
                               checkingDisabled: query.header.checkingDisabled, responseCode: rcode)
        var edns: EDNS?
        if let asked = query.edns {
            edns = EDNS(udpPayloadSize: Self.advertisedUDPPayloadSize, version: 0, dnssecOK: asked.dnssecOK)
        } else if rcode.rawValue > 15 {
            header.responseCode = .serverFailure
        }
        return DNSMessage(header: header, questions: echo ? query.questions : [], answers: answers, edns: edns)
    }
}

extension String {
    fileprivate var trimmingSpaces: Substring {
        var s = Substring(self)
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}
