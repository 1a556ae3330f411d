// A DNS message (RFC 1035 §4.1) as a value: header, questions, and three sections of resource
// records, with EDNS0's OPT pseudo-record lifted out of the additional section (RFC 6891).

import WarrenPacket

/// The fixed 12-octet header, less its four section counts (those follow from the sections).
public struct DNSHeader: Hashable, Sendable {
    public var id: UInt16
    /// QR: a response (true) or a query.
    public var isResponse: Bool
    public var opcode: DNSOpcode
    /// AA
    public var isAuthoritative: Bool
    /// TC
    public var isTruncated: Bool
    /// RD
    public var recursionDesired: Bool
    /// RA
    public var recursionAvailable: Bool
    /// The reserved Z bit (kept as read so that a forwarded message is not altered).
    public var zero: Bool
    /// AD (RFC 4035 §3.2.3)
    public var authenticData: Bool
    /// CD (RFC 4035 §3.2.2)
    public var checkingDisabled: Bool
    /// The full response code: the header's 4 bits, plus EDNS0's upper 8 when an OPT record is present.
    public var responseCode: DNSResponseCode

    public init(
        id: UInt16 = 0, isResponse: Bool = false, opcode: DNSOpcode = .query, isAuthoritative: Bool = false,
        isTruncated: Bool = false, recursionDesired: Bool = false, recursionAvailable: Bool = false,
        zero: Bool = false, authenticData: Bool = false, checkingDisabled: Bool = false,
        responseCode: DNSResponseCode = .noError
    ) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.isAuthoritative = isAuthoritative
        self.isTruncated = isTruncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.zero = zero
        self.authenticData = authenticData
        self.checkingDisabled = checkingDisabled
        self.responseCode = responseCode
    }

    /// The second 16-bit word (flags and the low 4 bits of the response code).
    var flags: UInt16 {
        var f: UInt16 = 0
        if isResponse { f |= 0x8000 }
        f |= UInt16(opcode.rawValue) << 11
        if isAuthoritative { f |= 0x0400 }
        if isTruncated { f |= 0x0200 }
        if recursionDesired { f |= 0x0100 }
        if recursionAvailable { f |= 0x0080 }
        if zero { f |= 0x0040 }
        if authenticData { f |= 0x0020 }
        if checkingDisabled { f |= 0x0010 }
        f |= responseCode.rawValue & 0x000F
        return f
    }

    init(id: UInt16, flags f: UInt16) {
        self.init(
            id: id, isResponse: f & 0x8000 != 0, opcode: DNSOpcode(rawValue: UInt8(f >> 11 & 0x0F)),
            isAuthoritative: f & 0x0400 != 0, isTruncated: f & 0x0200 != 0, recursionDesired: f & 0x0100 != 0,
            recursionAvailable: f & 0x0080 != 0, zero: f & 0x0040 != 0, authenticData: f & 0x0020 != 0,
            checkingDisabled: f & 0x0010 != 0, responseCode: DNSResponseCode(rawValue: f & 0x000F))
    }

    /// Reads just the header of a message (nil when shorter than 12 octets): enough to answer
    /// FORMERR to a query whose body does not parse.
    public init?(peeking bytes: some Collection<UInt8>) {
        guard bytes.count >= 12 else { return nil }
        var i = bytes.startIndex
        let b0 = bytes[i]; bytes.formIndex(after: &i)
        let b1 = bytes[i]; bytes.formIndex(after: &i)
        let b2 = bytes[i]; bytes.formIndex(after: &i)
        let b3 = bytes[i]
        self.init(id: UInt16(b0) << 8 | UInt16(b1), flags: UInt16(b2) << 8 | UInt16(b3))
    }
}

/// An entry of the question section.
public struct DNSQuestion: Hashable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var `class`: DNSClass

    public init(name: DNSName, type: DNSRecordType, class: DNSClass = .internet) {
        self.name = name
        self.type = type
        self.class = `class`
    }
}

/// SOA RDATA (RFC 1035 §3.3.13).
public struct DNSSOA: Hashable, Sendable {
    public var primaryNameServer: DNSName
    public var responsibleMailbox: DNSName
    public var serial: UInt32
    public var refresh: UInt32
    public var retry: UInt32
    public var expire: UInt32
    /// The negative-caching TTL (RFC 2308 §4).
    public var minimum: UInt32

    public init(primaryNameServer: DNSName, responsibleMailbox: DNSName, serial: UInt32, refresh: UInt32,
                retry: UInt32, expire: UInt32, minimum: UInt32) {
        self.primaryNameServer = primaryNameServer
        self.responsibleMailbox = responsibleMailbox
        self.serial = serial
        self.refresh = refresh
        self.retry = retry
        self.expire = expire
        self.minimum = minimum
    }
}

/// A record's data, typed for the types MagicDNS deals in, raw octets for the rest (RFC 3597).
public enum DNSRecordData: Hashable, Sendable {
    case a(IPAddress)
    case aaaa(IPAddress)
    case ns(DNSName)
    case cname(DNSName)
    case ptr(DNSName)
    case mx(preference: UInt16, exchange: DNSName)
    /// One or more character-strings, each at most 255 octets.
    case txt([[UInt8]])
    case srv(priority: UInt16, weight: UInt16, port: UInt16, target: DNSName)
    case soa(DNSSOA)
    /// The RDATA of any other type, as it was on the wire.
    case raw([UInt8])
}

/// A resource record of the answer, authority or additional section (never OPT: see `EDNS`).
public struct DNSResourceRecord: Hashable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var `class`: DNSClass
    public var ttl: UInt32
    public var data: DNSRecordData

    public init(name: DNSName, type: DNSRecordType, class: DNSClass = .internet, ttl: UInt32, data: DNSRecordData) {
        self.name = name
        self.type = type
        self.class = `class`
        self.ttl = ttl
        self.data = data
    }

    /// An A or AAAA record for `address`, by its family.
    public static func address(name: DNSName, _ address: IPAddress, ttl: UInt32) -> DNSResourceRecord {
        switch address {
        case .v4: return DNSResourceRecord(name: name, type: .a, ttl: ttl, data: .a(address))
        case .v6: return DNSResourceRecord(name: name, type: .aaaa, ttl: ttl, data: .aaaa(address))
        }
    }
}

/// An EDNS0 option (code and value, RFC 6891 §6.1.2).
public struct EDNSOption: Hashable, Sendable {
    public var code: UInt16
    public var data: [UInt8]

    public init(code: UInt16, data: [UInt8]) {
        self.code = code
        self.data = data
    }
}

/// The OPT pseudo-record's contents (RFC 6891 §6.1). The extended response code lives in
/// `DNSHeader.responseCode`.
public struct EDNS: Hashable, Sendable {
    /// The largest UDP payload the sender can reassemble (values under 512 mean 512).
    public var udpPayloadSize: UInt16
    public var version: UInt8
    /// DO: the sender can handle DNSSEC records (RFC 3225).
    public var dnssecOK: Bool
    /// The other 15 flag bits, as read.
    public var otherFlags: UInt16
    public var options: [EDNSOption]

    public init(udpPayloadSize: UInt16 = 1232, version: UInt8 = 0, dnssecOK: Bool = false,
                otherFlags: UInt16 = 0, options: [EDNSOption] = []) {
        self.udpPayloadSize = udpPayloadSize
        self.version = version
        self.dnssecOK = dnssecOK
        self.otherFlags = otherFlags & 0x7FFF
        self.options = options
    }
}

/// A whole DNS message.
public struct DNSMessage: Hashable, Sendable {
    public var header: DNSHeader
    public var questions: [DNSQuestion]
    public var answers: [DNSResourceRecord]
    public var authorities: [DNSResourceRecord]
    /// The additional section without the OPT record.
    public var additionals: [DNSResourceRecord]
    /// The OPT record's contents, when the message has one.
    public var edns: EDNS?

    public init(header: DNSHeader, questions: [DNSQuestion] = [], answers: [DNSResourceRecord] = [],
                authorities: [DNSResourceRecord] = [], additionals: [DNSResourceRecord] = [], edns: EDNS? = nil) {
        self.header = header
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
        self.edns = edns
    }

    /// A recursive query for `name` and `type`, optionally with EDNS0.
    public static func query(id: UInt16, name: DNSName, type: DNSRecordType, edns: EDNS? = EDNS()) -> DNSMessage {
        DNSMessage(header: DNSHeader(id: id, recursionDesired: true),
                   questions: [DNSQuestion(name: name, type: type)], edns: edns)
    }

    /// The UDP payload size above which a response to this query must be truncated (RFC 1035
    /// §4.2.1, RFC 6891 §6.2.5): 512 without EDNS0, else the advertised size (at least 512) capped at
    /// `udpCap`; 65535 over TCP.
    public func maximumResponseSize(overTCP: Bool, udpCap: Int = 1232) -> Int {
        if overTCP { return 65535 }
        guard let edns else { return 512 }
        return max(512, min(Int(edns.udpPayloadSize), max(512, udpCap)))
    }
}
