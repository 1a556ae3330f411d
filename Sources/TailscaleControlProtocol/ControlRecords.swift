// Framing and encryption of the ts2021 transport: 3-byte headers, records of at most 4096 bytes,
// one ChaCha20-Poly1305 nonce counter per direction.

internal import Crypto
public import WarrenFastAEAD

/// One control-channel frame after the handshake initiation: type, then its payload.
public struct ControlFrame: Hashable, Sendable {
    public var type: UInt8
    public var payload: [UInt8]

    public init(type: UInt8, payload: [UInt8]) {
        self.type = type
        self.payload = payload
    }
}

/// Splits a byte stream into ``ControlFrame``s (`type | length (2B BE) | payload`). Feed it bytes in any
/// split; it never buffers more than one frame beyond what was fed.
public struct ControlFrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0
    /// The largest whole frame (header included) accepted. 4096 for records; a client reading the
    /// handshake reply may allow an error message of up to 65538 bytes.
    public var maximumFrameLength: Int

    public init(maximumFrameLength: Int = ControlWire.headerLength + Int(UInt16.max)) {
        self.maximumFrameLength = maximumFrameLength
    }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// Bytes fed but not yet returned in a frame.
    public var bufferedByteCount: Int { buffer.count - start }

    /// The next whole frame, or nil if more bytes are needed. Throws if the header announces a frame
    /// larger than ``maximumFrameLength`` (the stream is then unusable).
    public mutating func nextFrame() throws -> ControlFrame? {
        let available = buffer.count - start
        guard available >= ControlWire.headerLength else { return nil }
        let length = Int(buffer[start + 1]) << 8 | Int(buffer[start + 2])
        let total = ControlWire.headerLength + length
        guard total <= maximumFrameLength else { throw ControlProtocolError(.recordTooLarge(total)) }
        guard available >= total else { return nil }
        let frame = ControlFrame(type: buffer[start],
                                 payload: Array(buffer[(start + ControlWire.headerLength)..<(start + total)]))
        start += total
        return frame
    }

    /// Takes the bytes left over after the frames read so far (for example after the handshake).
    public mutating func takeRemainingBytes() -> [UInt8] {
        let rest = Array(buffer[start...])
        buffer = []
        start = 0
        return rest
    }
}

/// Encrypts outgoing data into records. Any amount of plaintext is split into records of at most
/// 4077 plaintext bytes; an empty write yields one empty record (valid in this protocol).
public struct ControlRecordSender: Sendable {
    private let key: SymmetricKey
    /// The same key for the in-place path (``seal(_:into:context:)``).
    private let fastKey: ChaCha20Poly1305Key
    private var counter: UInt64 = 0

    init(key: SymmetricKey) {
        self.key = key
        // A SymmetricKey from the handshake is always 32 bytes.
        fastKey = key.withUnsafeBytes { try! ChaCha20Poly1305Key($0) }
    }

    /// The wire length of the records that carry `plaintextCount` bytes (an empty write is one empty record).
    public static func sealedLength(plaintextCount: Int) -> Int {
        let records = max(1, (plaintextCount + ControlWire.maximumPlaintextLength - 1) / ControlWire.maximumPlaintextLength)
        return plaintextCount + records * (ControlWire.headerLength + ControlWire.tagLength)
    }

    /// Seals `plaintext` into records written to the start of `out` (at least ``sealedLength(plaintextCount:)`` bytes),
    /// in place: each record's plaintext is copied once, then encrypted where it lies. Returns the bytes written. The
    /// same records, counter for counter, as ``seal(_:)``.
    public mutating func seal(_ plaintext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer,
                              context: ChaCha20Poly1305Context) throws -> Int {
        precondition(out.count >= Self.sealedLength(plaintextCount: plaintext.count), "no room for the records")
        var offset = 0, written = 0
        repeat {
            guard counter != UInt64.max else { throw ControlProtocolError(.nonceExhausted) }
            let length = min(plaintext.count - offset, ControlWire.maximumPlaintextLength)
            let sealed = length + ControlWire.tagLength
            out[written] = ControlMessageType.record.rawValue
            out[written + 1] = UInt8(truncatingIfNeeded: sealed >> 8)
            out[written + 2] = UInt8(truncatingIfNeeded: sealed)
            let body = UnsafeMutableRawBufferPointer(rebasing: out[(written + ControlWire.headerLength)...])
            if length > 0 { body.baseAddress!.copyMemory(from: plaintext.baseAddress! + offset, byteCount: length) }
            fastKey.seal(counter: counter, buffer: body, plaintextCount: length, context: context, bigEndianCounter: true)
            counter += 1
            offset += length
            written += ControlWire.headerLength + sealed
        } while offset < plaintext.count
        return written
    }

    /// The number of records sealed so far (the next nonce counter).
    public var recordsSealed: UInt64 { counter }

    /// Returns the wire bytes of one or more records carrying `plaintext`.
    public mutating func seal(_ plaintext: some Collection<UInt8>) throws -> [UInt8] {
        let bytes = Array(plaintext)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count + (bytes.count / ControlWire.maximumPlaintextLength + 1) * 19)
        var offset = 0
        repeat {
            let end = min(bytes.count, offset + ControlWire.maximumPlaintextLength)
            out += try sealRecord(bytes[offset..<end])
            offset = end
        } while offset < bytes.count
        return out
    }

    private mutating func sealRecord(_ chunk: ArraySlice<UInt8>) throws -> [UInt8] {
        // Like controlbase, the all-ones counter is never used.
        guard counter != UInt64.max else { throw ControlProtocolError(.nonceExhausted) }
        let ciphertext = ControlAEAD.seal(Array(chunk), key: key, counter: counter, additionalData: [])
        counter += 1
        var record = [ControlMessageType.record.rawValue]
        record.appendBigEndian(UInt16(ciphertext.count))
        return record + ciphertext
    }
}

/// Decrypts incoming records. Feed it the raw stream with ``append(_:)`` and pull plaintext with
/// ``nextPlaintext()``. After any failure (bad type, oversized record, failed authentication) it stays
/// failed: the two sides are no longer in sync.
public struct ControlRecordReceiver: Sendable {
    private let key: SymmetricKey
    /// The same key for the in-place path (``openRecords(in:context:output:)``).
    private let fastKey: ChaCha20Poly1305Key
    private var counter: UInt64 = 0
    private var decoder = ControlFrameDecoder(maximumFrameLength: ControlWire.maximumMessageLength)
    private var failed = false

    init(key: SymmetricKey) {
        self.key = key
        fastKey = key.withUnsafeBytes { try! ChaCha20Poly1305Key($0) }
    }

    /// Opens, in place, the whole records at the start of `bytes` (raw stream bytes, which the caller keeps between
    /// calls) and hands each record's plaintext to `output` (a view into `bytes`, valid during the call). Returns the
    /// bytes consumed; a partial record at the end is left for the next call, with more bytes after it. The checks of
    /// ``nextPlaintext()``, and it fails the same way: a bad type, an oversized record or a failed tag, and it stays
    /// failed. Not to be mixed with ``append(_:)`` on one receiver.
    public mutating func openRecords(in bytes: UnsafeMutableRawBufferPointer, context: ChaCha20Poly1305Context,
                                     output: (UnsafeRawBufferPointer) -> Void) throws -> Int {
        guard !failed else { throw ControlProtocolError(.channelFailed) }
        var offset = 0
        do {
            while bytes.count - offset >= ControlWire.headerLength {
                let length = Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
                let total = ControlWire.headerLength + length
                guard total <= ControlWire.maximumMessageLength else { throw ControlProtocolError(.recordTooLarge(total)) }
                guard bytes.count - offset >= total else { break }
                guard bytes[offset] == ControlMessageType.record.rawValue else {
                    throw ControlProtocolError(.unexpectedMessageType(bytes[offset]))
                }
                guard counter != UInt64.max else { throw ControlProtocolError(.nonceExhausted) }
                let body = UnsafeMutableRawBufferPointer(rebasing: bytes[(offset + ControlWire.headerLength)..<(offset + total)])
                guard fastKey.open(counter: counter, buffer: body, ciphertextAndTagCount: length, context: context,
                                   bigEndianCounter: true) else { throw ControlProtocolError(.decryptionFailed) }
                counter += 1
                output(UnsafeRawBufferPointer(rebasing: body.prefix(length - ControlWire.tagLength)))
                offset += total
            }
        } catch {
            failed = true
            throw error
        }
        return offset
    }

    public var recordsOpened: UInt64 { counter }

    public mutating func append(_ bytes: some Sequence<UInt8>) { decoder.append(bytes) }

    /// The plaintext of the next whole record (possibly empty), or nil if more bytes are needed.
    public mutating func nextPlaintext() throws -> [UInt8]? {
        guard !failed else { throw ControlProtocolError(.channelFailed) }
        do {
            guard let frame = try decoder.nextFrame() else { return nil }
            return try open(frame)
        } catch {
            failed = true
            throw error
        }
    }

    /// Decrypts every whole record buffered so far and returns their plaintext concatenated.
    public mutating func drainPlaintext() throws -> [UInt8] {
        var out = [UInt8]()
        while let chunk = try nextPlaintext() { out += chunk }
        return out
    }

    private mutating func open(_ frame: ControlFrame) throws -> [UInt8] {
        guard frame.type == ControlMessageType.record.rawValue else {
            throw ControlProtocolError(.unexpectedMessageType(frame.type))
        }
        guard counter != UInt64.max else { throw ControlProtocolError(.nonceExhausted) }
        let plaintext = try ControlAEAD.open(frame.payload, key: key, counter: counter, additionalData: [])
        counter += 1
        return plaintext
    }
}
