// Encoding DNS messages, with name compression (RFC 1035 §4.1.4) for owner names and the RDATA
// names of the well-known types (RFC 3597 §4: NS, CNAME, PTR, MX, SOA; never SRV, RFC 2782), and
// truncation to a size limit: whole records are dropped, never cut, and TC is set when an answer or
// authority record had to go (RFC 2181 §9); additional records are dropped silently. The OPT record
// always survives truncation (RFC 6891 §7).

import WarrenPacket

/// Why a message value cannot be put on the wire.
public enum DNSEncodingError: Error, Equatable, Sendable {
    /// A TXT character-string longer than 255 octets.
    case characterStringTooLong
    /// RDATA or an EDNS option longer than 65535 octets.
    case dataTooLong
    /// More than 65535 entries in a section.
    case tooManyEntries
}

extension DNSMessage {
    /// The message on the wire, at most `maximumSize` octets unless the header, questions and OPT
    /// record alone exceed it (then those are sent and every record is dropped).
    ///
    /// - Parameter maximumSize: 512 for plain UDP, the client's EDNS0 size, or 65535 over TCP
    ///   (see `maximumResponseSize(overTCP:udpCap:)`).
    public func encoded(maximumSize: Int = 65535) throws -> [UInt8] {
        guard questions.count <= 0xFFFF, answers.count <= 0xFFFF, authorities.count <= 0xFFFF,
              additionals.count < 0xFFFF else { throw DNSEncodingError.tooManyEntries }
        var writer = DNSWriter()
        writer.bytes.reserveCapacity(min(maximumSize, 512))
        writer.u16(header.id)
        writer.u16(0)  // flags, written at the end (TC may change)
        writer.u16(UInt16(questions.count))
        writer.u16(0)
        writer.u16(0)
        writer.u16(0)
        for q in questions {
            writer.name(q.name, compress: true)
            writer.u16(q.type.rawValue)
            writer.u16(q.class.rawValue)
        }
        var optSize = 0
        if let edns {
            optSize = 11
            for option in edns.options {
                guard option.data.count <= 0xFFFF else { throw DNSEncodingError.dataTooLong }
                optSize += 4 + option.data.count
            }
            guard optSize - 11 <= 0xFFFF else { throw DNSEncodingError.dataTooLong }
        }
        let budget = min(maximumSize, 65535) - optSize
        var truncated = header.isTruncated
        var counts = [0, 0, 0]
        var full = false
        for (index, section) in [answers, authorities, additionals].enumerated() where !full {
            for record in section {
                let mark = writer.bytes.count
                try writer.record(record)
                if writer.bytes.count > budget {
                    writer.bytes.removeSubrange(mark...)
                    if index < 2 { truncated = true }
                    full = true
                    break
                }
                counts[index] += 1
            }
        }
        if let edns {
            writer.u8(0)
            writer.u16(DNSRecordType.opt.rawValue)
            writer.u16(edns.udpPayloadSize)
            writer.u8(UInt8(truncatingIfNeeded: header.responseCode.rawValue >> 4))
            writer.u8(edns.version)
            writer.u16((edns.dnssecOK ? 0x8000 : 0) | edns.otherFlags & 0x7FFF)
            writer.u16(UInt16(optSize - 11))
            for option in edns.options {
                writer.u16(option.code)
                writer.u16(UInt16(option.data.count))
                writer.bytes += option.data
            }
            counts[2] += 1
        }
        var finalHeader = header
        finalHeader.isTruncated = truncated
        writer.set16(at: 2, finalHeader.flags)
        writer.set16(at: 6, UInt16(counts[0]))
        writer.set16(at: 8, UInt16(counts[1]))
        writer.set16(at: 10, UInt16(counts[2]))
        return writer.bytes
    }
}

struct DNSWriter {
    var bytes: [UInt8] = []
    /// Hash of a lower-cased name suffix -> offset where it was written (verified before use, so a
    /// hash collision costs only a missed compression).
    private var suffixes: [Int: Int] = [:]

    mutating func u8(_ v: UInt8) { bytes.append(v) }

    mutating func u16(_ v: UInt16) {
        bytes.append(UInt8(v >> 8))
        bytes.append(UInt8(truncatingIfNeeded: v))
    }

    mutating func u32(_ v: UInt32) {
        u16(UInt16(v >> 16))
        u16(UInt16(truncatingIfNeeded: v))
    }

    mutating func set16(at offset: Int, _ v: UInt16) {
        bytes[offset] = UInt8(v >> 8)
        bytes[offset + 1] = UInt8(truncatingIfNeeded: v)
    }

    private static func suffixHash(_ wire: [UInt8], from start: Int) -> Int {
        var hasher = Hasher()
        for i in start..<wire.count { hasher.combine(DNSName.lower(wire[i])) }
        return hasher.finalize()
    }

    /// Whether the name written at `offset` (following our own pointers) equals wire[start...].
    private func matches(at offset: Int, _ wire: [UInt8], from start: Int) -> Bool {
        var p = offset, q = start
        var hops = 0
        while true {
            guard p < bytes.count else { return false }
            let length = bytes[p]
            if length & 0xC0 == 0xC0 {
                hops += 1
                guard hops < 128, p + 1 < bytes.count else { return false }
                p = Int(length & 0x3F) << 8 | Int(bytes[p + 1])
                continue
            }
            guard length == wire[q] else { return false }
            if length == 0 { return true }
            let n = Int(length)
            guard p + 1 + n <= bytes.count else { return false }
            for k in 1...n where DNSName.lower(bytes[p + k]) != DNSName.lower(wire[q + k]) { return false }
            p += n + 1
            q += n + 1
        }
    }

    mutating func name(_ name: DNSName, compress: Bool) {
        let wire = name.wire
        var i = 0
        var pending: [(hash: Int, offset: Int)] = []
        while wire[i] != 0 {
            let hash = Self.suffixHash(wire, from: i)
            if compress, let target = suffixes[hash], matches(at: target, wire, from: i) {
                bytes.append(contentsOf: wire[0..<i])
                u16(0xC000 | UInt16(target))
                register(pending, base: bytes.count - 2 - i)
                return
            }
            pending.append((hash, i))
            i += Int(wire[i]) + 1
        }
        let base = bytes.count
        bytes.append(contentsOf: wire)
        register(pending, base: base)
    }

    private mutating func register(_ pending: [(hash: Int, offset: Int)], base: Int) {
        for entry in pending where base + entry.offset < 0x4000 && suffixes[entry.hash] == nil {
            suffixes[entry.hash] = base + entry.offset
        }
    }

    mutating func record(_ record: DNSResourceRecord) throws {
        name(record.name, compress: true)
        u16(record.type.rawValue)
        u16(record.class.rawValue)
        u32(record.ttl)
        let lengthAt = bytes.count
        u16(0)
        switch record.data {
        case .a(let address), .aaaa(let address):
            switch address {
            case .v4(let v): u32(v)
            case .v6(let hi, let lo):
                u32(UInt32(hi >> 32)); u32(UInt32(truncatingIfNeeded: hi))
                u32(UInt32(lo >> 32)); u32(UInt32(truncatingIfNeeded: lo))
            }
        case .ns(let n), .cname(let n), .ptr(let n):
            name(n, compress: true)
        case .mx(let preference, let exchange):
            u16(preference)
            name(exchange, compress: true)
        case .txt(let strings):
            for s in strings {
                guard s.count <= 255 else { throw DNSEncodingError.characterStringTooLong }
                u8(UInt8(s.count))
                bytes += s
            }
        case .srv(let priority, let weight, let port, let target):
            u16(priority); u16(weight); u16(port)
            name(target, compress: false)
        case .soa(let soa):
            name(soa.primaryNameServer, compress: true)
            name(soa.responsibleMailbox, compress: true)
            u32(soa.serial); u32(soa.refresh); u32(soa.retry); u32(soa.expire); u32(soa.minimum)
        case .raw(let data):
            bytes += data
        }
        let length = bytes.count - lengthAt - 2
        guard length <= 0xFFFF else { throw DNSEncodingError.dataTooLong }
        set16(at: lengthAt, UInt16(length))
    }
}
