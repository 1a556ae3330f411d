// Decoding DNS messages from untrusted octets. Every read is bounds-checked; compression pointers
// (RFC 1035 §4.1.4) must point strictly backwards, which bounds the work on any input and rules
// out loops; names stay within 255 octets; RDATA must be used up exactly by its typed form.

import WarrenPacket

/// Why octets are not a DNS message.
public enum DNSDecodingError: Error, Equatable, Sendable {
    /// The message ends in the middle of something.
    case truncated
    /// A compression pointer points at or after itself (or out of the message).
    case badPointer
    /// Label type 01 or 10 (RFC 6891 §5 retired extended labels).
    case badLabelType
    /// A name's wire form exceeds 255 octets.
    case nameTooLong
    /// A record's RDATA does not match its type's layout.
    case badRecordData(DNSRecordType)
    /// An OPT record with a non-root owner, outside the additional section, or more than one.
    case badOPT
}

extension DNSMessage {
    /// Decodes a whole message. Octets after the last record are ignored.
    public init(bytes: [UInt8]) throws {
        self = try bytes.withUnsafeBytes { try DNSMessage(buffer: $0) }
    }

    /// Decodes a whole message from a buffer (for example a NIO ByteBuffer's readable bytes).
    public init(buffer: UnsafeRawBufferPointer) throws {
        var reader = DNSReader(buffer: buffer)
        let id = try reader.u16()
        let flags = try reader.u16()
        let qdCount = Int(try reader.u16())
        let anCount = Int(try reader.u16())
        let nsCount = Int(try reader.u16())
        let arCount = Int(try reader.u16())
        var header = DNSHeader(id: id, flags: flags)

        // A question takes at least 5 octets and a record 11: never reserve more than the buffer holds.
        var questions: [DNSQuestion] = []
        questions.reserveCapacity(min(qdCount, reader.remaining / 5))
        for _ in 0..<qdCount {
            let name = try reader.name()
            let type = DNSRecordType(rawValue: try reader.u16())
            let cls = DNSClass(rawValue: try reader.u16())
            questions.append(DNSQuestion(name: name, type: type, class: cls))
        }
        var edns: EDNS?
        var extendedRCode: UInt8 = 0
        func section(_ count: Int, isAdditional: Bool) throws -> [DNSResourceRecord] {
            var records: [DNSResourceRecord] = []
            records.reserveCapacity(min(count, reader.remaining / 11))
            for _ in 0..<count {
                switch try reader.record() {
                case .record(let record):
                    records.append(record)
                case .opt(let opt, let high):
                    guard isAdditional, edns == nil else { throw DNSDecodingError.badOPT }
                    edns = opt
                    extendedRCode = high
                }
            }
            return records
        }
        let answers = try section(anCount, isAdditional: false)
        let authorities = try section(nsCount, isAdditional: false)
        let additionals = try section(arCount, isAdditional: true)
        if edns != nil {
            header.responseCode = DNSResponseCode(rawValue: UInt16(extendedRCode) << 4 | header.responseCode.rawValue)
        }
        self.init(header: header, questions: questions, answers: answers, authorities: authorities,
                  additionals: additionals, edns: edns)
    }
}

enum DecodedRecord {
    case record(DNSResourceRecord)
    case opt(EDNS, extendedRCode: UInt8)
}

struct DNSReader {
    let buffer: UnsafeRawBufferPointer
    var offset = 0

    init(buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var remaining: Int { buffer.count - offset }

    mutating func u8() throws -> UInt8 {
        guard offset < buffer.count else { throw DNSDecodingError.truncated }
        defer { offset += 1 }
        return buffer[offset]
    }

    mutating func u16() throws -> UInt16 {
        guard offset + 2 <= buffer.count else { throw DNSDecodingError.truncated }
        defer { offset += 2 }
        return UInt16(buffer[offset]) << 8 | UInt16(buffer[offset + 1])
    }

    mutating func u32() throws -> UInt32 {
        guard offset + 4 <= buffer.count else { throw DNSDecodingError.truncated }
        defer { offset += 4 }
        return UInt32(buffer[offset]) << 24 | UInt32(buffer[offset + 1]) << 16
            | UInt32(buffer[offset + 2]) << 8 | UInt32(buffer[offset + 3])
    }

    mutating func bytes(_ count: Int) throws -> [UInt8] {
        guard count >= 0, offset + count <= buffer.count else { throw DNSDecodingError.truncated }
        defer { offset += count }
        return Array(buffer[offset..<(offset + count)])
    }

    /// Reads a possibly compressed name at the cursor; the cursor moves past its in-place part.
    mutating func name() throws -> DNSName {
        var wire: [UInt8] = []
        wire.reserveCapacity(32)
        var position = offset
        var jumped = false
        // Each pointer must point before the label that holds it, so positions strictly fall
        // after every jump and the loop ends.
        var limit = offset
        while true {
            guard position < buffer.count else { throw DNSDecodingError.truncated }
            let length = buffer[position]
            switch length & 0xC0 {
            case 0x00:
                if length == 0 {
                    wire.append(0)
                    guard wire.count <= DNSName.maximumWireLength else { throw DNSDecodingError.nameTooLong }
                    if !jumped { offset = position + 1 }
                    return DNSName(uncheckedWire: wire)
                }
                let end = position + 1 + Int(length)
                guard end <= buffer.count else { throw DNSDecodingError.truncated }
                guard wire.count + Int(length) + 2 <= DNSName.maximumWireLength else {
                    throw DNSDecodingError.nameTooLong
                }
                wire.append(length)
                wire.append(contentsOf: buffer[(position + 1)..<end])
                position = end
            case 0xC0:
                guard position + 2 <= buffer.count else { throw DNSDecodingError.truncated }
                let target = Int(length & 0x3F) << 8 | Int(buffer[position + 1])
                guard target < limit, target < position else { throw DNSDecodingError.badPointer }
                if !jumped {
                    offset = position + 2
                    jumped = true
                }
                limit = target
                position = target
            default:
                throw DNSDecodingError.badLabelType
            }
        }
    }

    mutating func record() throws -> DecodedRecord {
        let name = try name()
        let type = DNSRecordType(rawValue: try u16())
        let rawClass = try u16()
        let ttl = try u32()
        let length = Int(try u16())
        guard offset + length <= buffer.count else { throw DNSDecodingError.truncated }
        let end = offset + length
        if type == .opt {
            guard name.isRoot else { throw DNSDecodingError.badOPT }
            var options: [EDNSOption] = []
            while offset < end {
                let code = try u16()
                let optionLength = Int(try u16())
                guard offset + optionLength <= end else { throw DNSDecodingError.badRecordData(.opt) }
                options.append(EDNSOption(code: code, data: try bytes(optionLength)))
            }
            let edns = EDNS(udpPayloadSize: rawClass, version: UInt8(truncatingIfNeeded: ttl >> 16),
                            dnssecOK: ttl & 0x8000 != 0, otherFlags: UInt16(truncatingIfNeeded: ttl) & 0x7FFF,
                            options: options)
            return .opt(edns, extendedRCode: UInt8(truncatingIfNeeded: ttl >> 24))
        }
        let data = try recordData(type: type, end: end)
        guard offset == end else { throw DNSDecodingError.badRecordData(type) }
        return .record(DNSResourceRecord(name: name, type: type, class: DNSClass(rawValue: rawClass), ttl: ttl, data: data))
    }

    /// A name inside RDATA: it may point anywhere earlier, but its in-place part ends by `end`.
    private mutating func name(within end: Int, type: DNSRecordType) throws -> DNSName {
        let n = try name()
        guard offset <= end else { throw DNSDecodingError.badRecordData(type) }
        return n
    }

    private mutating func recordData(type: DNSRecordType, end: Int) throws -> DNSRecordData {
        let length = end - offset
        switch type {
        case .a:
            guard length == 4 else { throw DNSDecodingError.badRecordData(type) }
            return .a(.v4(try u32()))
        case .aaaa:
            guard length == 16 else { throw DNSDecodingError.badRecordData(type) }
            let hi = UInt64(try u32()) << 32 | UInt64(try u32())
            let lo = UInt64(try u32()) << 32 | UInt64(try u32())
            return .aaaa(.v6(hi, lo))
        case .ns:
            return .ns(try name(within: end, type: type))
        case .cname:
            return .cname(try name(within: end, type: type))
        case .ptr:
            return .ptr(try name(within: end, type: type))
        case .mx:
            guard length >= 3 else { throw DNSDecodingError.badRecordData(type) }
            let preference = try u16()
            return .mx(preference: preference, exchange: try name(within: end, type: type))
        case .txt:
            guard length >= 1 else { throw DNSDecodingError.badRecordData(type) }
            var strings: [[UInt8]] = []
            while offset < end {
                let count = Int(try u8())
                guard offset + count <= end else { throw DNSDecodingError.badRecordData(type) }
                strings.append(try bytes(count))
            }
            return .txt(strings)
        case .srv:
            guard length >= 7 else { throw DNSDecodingError.badRecordData(type) }
            let priority = try u16(), weight = try u16(), port = try u16()
            return .srv(priority: priority, weight: weight, port: port, target: try name(within: end, type: type))
        case .soa:
            let mname = try name(within: end, type: type)
            let rname = try name(within: end, type: type)
            guard end - offset == 20 else { throw DNSDecodingError.badRecordData(type) }
            return .soa(DNSSOA(primaryNameServer: mname, responsibleMailbox: rname, serial: try u32(),
                               refresh: try u32(), retry: try u32(), expire: try u32(), minimum: try u32()))
        default:
            return .raw(try bytes(length))
        }
    }
}
