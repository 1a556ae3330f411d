// Noise's SymmetricState as controlbase uses it: h and ck start as BLAKE2s(protocol name); every DH
// output is mixed with HKDF(ck, dh) into a new chaining key and a single-use ChaCha20-Poly1305 key whose
// nonce is zero; Split() derives the two transport keys.

internal import Crypto
import TailscaleKeys
import WarrenCrypto

struct NoiseSymmetricState: Sendable {
    private(set) var h: [UInt8]
    private var ck: [UInt8]

    init(protocolName: String) {
        // The name is 32 bytes long, so Noise hashes it (names of at most 32 bytes are used padded).
        let name = Array(protocolName.utf8)
        if name.count <= 32 {
            h = name + [UInt8](repeating: 0, count: 32 - name.count)
        } else {
            h = BLAKE2s.hash(data: name)
        }
        ck = h
    }

    mutating func mixHash(_ data: some Sequence<UInt8>) {
        var hasher = BLAKE2s()
        hasher.update(data: h)
        hasher.update(data: data)
        h = hasher.finalize()
    }

    /// MixKey(DH(priv, pub)); returns the single-use cipher key.
    mutating func mixDH(_ priv: MachinePrivate, _ pub: MachinePublic) throws -> SymmetricKey {
        let dh: [UInt8]
        do { dh = try priv.sharedSecret(with: pub) } catch { throw ControlProtocolError(.lowOrderKey) }
        let out = NoiseHKDF.derive(chainingKey: ck, inputKeyMaterial: dh, count: 2)
        ck = out[0]
        return SymmetricKey(data: out[1])
    }

    /// EncryptAndHash with a fresh key (nonce zero), authenticating h.
    mutating func encryptAndHash(_ key: SymmetricKey, _ plaintext: [UInt8]) -> [UInt8] {
        let ciphertext = ControlAEAD.seal(plaintext, key: key, counter: 0, additionalData: h)
        mixHash(ciphertext)
        return ciphertext
    }

    mutating func decryptAndHash(_ key: SymmetricKey, _ ciphertext: [UInt8]) throws -> [UInt8] {
        let plaintext = try ControlAEAD.open(ciphertext, key: key, counter: 0, additionalData: h)
        mixHash(ciphertext)
        return plaintext
    }

    /// The initiator's sending key first, then the responder's.
    func split() -> (SymmetricKey, SymmetricKey) {
        let out = NoiseHKDF.derive(chainingKey: ck, inputKeyMaterial: [UInt8](), count: 2)
        return (SymmetricKey(data: out[0]), SymmetricKey(data: out[1]))
    }
}

/// ChaCha20-Poly1305 with controlbase's nonce: four zero bytes, then the 64-bit counter **big-endian**
/// (Noise itself says little-endian; Tailscale deviates, see controlbase/conn.go `nonce`).
enum ControlAEAD {
    static func nonce(_ counter: UInt64) -> ChaChaPoly.Nonce {
        var bytes = [UInt8](repeating: 0, count: 4)
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: counter >> UInt64(shift))) }
        // A 12-byte nonce is always accepted.
        return try! ChaChaPoly.Nonce(data: bytes)
    }

    static func seal(_ plaintext: [UInt8], key: SymmetricKey, counter: UInt64, additionalData: [UInt8]) -> [UInt8] {
        // Sealing only fails for invalid nonce sizes, which `nonce` rules out.
        let box = try! ChaChaPoly.seal(plaintext, using: key, nonce: nonce(counter), authenticating: additionalData)
        return Array(box.ciphertext) + Array(box.tag)
    }

    static func open(_ ciphertext: [UInt8], key: SymmetricKey, counter: UInt64, additionalData: [UInt8]) throws -> [UInt8] {
        guard ciphertext.count >= ControlWire.tagLength else { throw ControlProtocolError(.decryptionFailed) }
        let split = ciphertext.count - ControlWire.tagLength
        do {
            let box = try ChaChaPoly.SealedBox(nonce: nonce(counter), ciphertext: ciphertext[..<split], tag: ciphertext[split...])
            return Array(try ChaChaPoly.open(box, using: key, authenticating: additionalData))
        } catch {
            throw ControlProtocolError(.decryptionFailed)
        }
    }
}
