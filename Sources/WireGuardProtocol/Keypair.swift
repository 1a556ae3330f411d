// Transport keys for one session (paper section 5.4.6): a send key, a receive key, the two
// indices, when they were made, and the counters. The keys never change; the send counter is an
// atomic and the replay window sits behind its own lock, so several threads may encrypt and
// decrypt with one keypair at once.

import Crypto
import Foundation
import Synchronization

/// The AEAD of the data path, for one direction of one session. The default is swift-crypto's
/// `ChaChaPoly`; a faster implementation can be plugged in through `NoiseHandshake.deriveKeypair`.
/// The nonce is four zero bytes and the 64-bit little-endian counter; there is no associated data.
public protocol TransportCipher: Sendable {
    /// A cipher for the 32-byte `key`.
    init(key: [UInt8])
    /// Encrypts `buffer[0..<count]` in place and writes the 16-byte tag at `buffer[count..<count+16]`.
    func sealInPlace(_ buffer: UnsafeMutableRawBufferPointer, count: Int, counter: UInt64)
    /// Authenticates and decrypts `buffer` (ciphertext followed by the tag) in place.
    /// Returns false (and may leave the buffer altered) when the tag does not match.
    func openInPlace(_ buffer: UnsafeMutableRawBufferPointer, counter: UInt64) -> Bool
}

/// `TransportCipher` over swift-crypto's `ChaChaPoly`.
public struct ChaChaPolyTransportCipher: TransportCipher {
    let key: SymmetricKey

    public init(key: [UInt8]) {
        precondition(key.count == 32, "transport keys are 32 bytes")
        self.key = SymmetricKey(data: key)
    }

    public func sealInPlace(_ buffer: UnsafeMutableRawBufferPointer, count: Int, counter: UInt64) {
        precondition(count >= 0 && buffer.count >= count + 16)
        let plaintext = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
        // Only invalid key or nonce sizes throw, and both are fixed here.
        let box = try! ChaChaPoly.seal(plaintext, using: key, nonce: Noise.nonce(counter))
        box.ciphertext.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
        box.tag.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: buffer[count..<(count + 16)]))
    }

    public func openInPlace(_ buffer: UnsafeMutableRawBufferPointer, counter: UInt64) -> Bool {
        guard buffer.count >= 16 else { return false }
        let n = buffer.count - 16
        let ciphertext = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
        let tag = UnsafeRawBufferPointer(rebasing: buffer[n...])
        guard let box = try? ChaChaPoly.SealedBox(nonce: Noise.nonce(counter), ciphertext: ciphertext, tag: tag),
              let plain = try? ChaChaPoly.open(box, using: key)
        else { return false }
        plain.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
        return true
    }
}

/// The keys of one session. Immutable apart from the send counter (atomic) and the replay window
/// (locked): share it freely between the encryption and decryption threads.
public final class Keypair: Sendable {
    /// Our index: the receiver index of the transport messages we accept with this keypair.
    public let localIndex: UInt32
    /// The peer's index: the receiver index we write into transport messages we send.
    public let remoteIndex: UInt32
    /// When the handshake that made this keypair finished.
    public let createdAt: ContinuousClock.Instant
    /// Whether we sent the initiation (only the initiator rekeys on age).
    public let isInitiator: Bool

    private let sender: any TransportCipher
    private let receiver: any TransportCipher
    private let sendCounter = Atomic<UInt64>(0)
    private let replay = Mutex(ReplayWindow())

    /// Builds a keypair from raw keys (normally made by `NoiseHandshake.deriveKeypair`).
    public init(sendKey: [UInt8], receiveKey: [UInt8], localIndex: UInt32, remoteIndex: UInt32,
                createdAt: ContinuousClock.Instant, isInitiator: Bool,
                cipher: any TransportCipher.Type = ChaChaPolyTransportCipher.self) {
        sender = cipher.init(key: sendKey)
        receiver = cipher.init(key: receiveKey)
        self.localIndex = localIndex
        self.remoteIndex = remoteIndex
        self.createdAt = createdAt
        self.isInitiator = isInitiator
    }

    // MARK: Sending

    /// How many counters have been handed out for sending.
    public var sendCounterValue: UInt64 { sendCounter.load(ordering: .relaxed) }

    /// Claims the next send counter; nil once `REJECT_AFTER_MESSAGES` counters are used
    /// (the keypair must not send any more).
    public func nextSendCounter() -> UInt64? {
        let c = sendCounter.wrappingAdd(1, ordering: .relaxed).oldValue
        if c >= WireGuardConstants.rejectAfterMessages {
            sendCounter.store(WireGuardConstants.rejectAfterMessages, ordering: .relaxed)
            return nil
        }
        return c
    }

    /// Whether this keypair may still send at `now`: fewer than `REJECT_AFTER_MESSAGES` counters
    /// used and younger than `REJECT_AFTER_TIME`.
    public func canSend(now: ContinuousClock.Instant) -> Bool {
        sendCounterValue < WireGuardConstants.rejectAfterMessages && now - createdAt < WireGuardConstants.rejectAfterTime
    }

    /// Whether transport messages for this keypair may still be accepted at `now`
    /// (not older than `REJECT_AFTER_TIME`).
    public func canReceive(now: ContinuousClock.Instant) -> Bool {
        now - createdAt <= WireGuardConstants.rejectAfterTime
    }

    /// The size of the transport message for a packet of `packetCount` bytes.
    public static func messageSize(forPacketOfSize packetCount: Int, mtu: Int) -> Int {
        TransportHeader.size + packetCount + TransportHeader.paddingCount(forPacketOfSize: packetCount, mtu: mtu) + 16
    }

    /// Writes a whole transport message into `buffer` in place. On entry the plaintext packet is at
    /// `buffer[16..<16+packetCount]`; `buffer` must hold `messageSize(forPacketOfSize:mtu:)` bytes.
    /// Returns the message length.
    public func sealInPlace(_ buffer: UnsafeMutableRawBufferPointer, packetCount: Int, counter: UInt64, mtu: Int) -> Int {
        let padding = TransportHeader.paddingCount(forPacketOfSize: packetCount, mtu: mtu)
        let total = TransportHeader.size + packetCount + padding + 16
        precondition(buffer.count >= total, "buffer too small for the transport message")
        let payload = UnsafeMutableRawBufferPointer(rebasing: buffer[TransportHeader.size..<total])
        if padding > 0 {
            UnsafeMutableRawBufferPointer(rebasing: payload[packetCount..<(packetCount + padding)]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        TransportHeader(receiverIndex: remoteIndex, counter: counter).write(to: buffer)
        sender.sealInPlace(payload, count: packetCount + padding, counter: counter)
        return total
    }

    /// Encrypts an IP packet (empty for a keepalive) into a whole transport message, claiming the
    /// next counter. Returns nil when the counters are exhausted. `mtu` limits the padding (0: none).
    public func seal(packet: [UInt8], mtu: Int = 0) -> [UInt8]? {
        guard let counter = nextSendCounter() else { return nil }
        return seal(packet: packet, counter: counter, mtu: mtu)
    }

    /// Encrypts with a given counter (from `nextSendCounter`).
    public func seal(packet: [UInt8], counter: UInt64, mtu: Int = 0) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.messageSize(forPacketOfSize: packet.count, mtu: mtu))
        out.replaceSubrange(TransportHeader.size..<(TransportHeader.size + packet.count), with: packet)
        let n = out.withUnsafeMutableBytes { sealInPlace($0, packetCount: packet.count, counter: counter, mtu: mtu) }
        return Array(out[0..<n])
    }

    // MARK: Receiving

    /// Decrypts the payload of a transport message in place: `payload` is everything after the
    /// 16-byte header. Returns the plaintext length (padding included) or nil when it does not
    /// authenticate. Does not touch the replay window: call `acceptCounter` afterwards.
    public func openInPlace(_ payload: UnsafeMutableRawBufferPointer, counter: UInt64) -> Int? {
        guard payload.count >= 16, receiver.openInPlace(payload, counter: counter) else { return nil }
        return payload.count - 16
    }

    /// Records `counter` in the replay window after the message authenticated. False for a replay,
    /// a counter too far behind, or one at or beyond `REJECT_AFTER_MESSAGES`: drop the packet.
    public func acceptCounter(_ counter: UInt64) -> Bool {
        replay.withLock { $0.accept(counter) }
    }

    /// The whole receive path for one transport message: checks the header and the index, the age,
    /// the tag and the replay window. Returns the decrypted packet (padding included; empty for a
    /// keepalive) or nil to drop.
    public func open(message: [UInt8], now: ContinuousClock.Instant) -> [UInt8]? {
        guard let header = try? TransportHeader(message: message), header.receiverIndex == localIndex,
              canReceive(now: now)
        else { return nil }
        var payload = Array(message[TransportHeader.size...])
        guard let n = payload.withUnsafeMutableBytes({ openInPlace($0, counter: header.counter) }),
              acceptCounter(header.counter)
        else { return nil }
        payload.removeLast(payload.count - n)
        return payload
    }
}
