// The real DERPInfoSealer: NaCl box between node keys, as Tailscale's NodePrivate.SealTo/OpenFrom.

internal import Crypto
import TailscaleKeys
import WarrenCrypto

/// Seals with NaCl box from `privateKey`; the 24-byte nonce comes from `nonce` (the I/O layer passes
/// a closure over a cryptographically secure generator, tests a seeded one).
public struct DERPNaClSealer: DERPInfoSealer {
    private let privateKey: NodePrivate
    private let nonce: @Sendable () -> [UInt8]

    public init(privateKey: NodePrivate, nonce: @escaping @Sendable () -> [UInt8]) {
        self.privateKey = privateKey
        self.nonce = nonce
    }

    private func sharedKey(_ peer: NodePublic) throws -> NaClBox.SharedKey {
        try NaClBox.precompute(publicKey: Curve25519.KeyAgreement.PublicKey(rawRepresentation: peer.rawRepresentation),
                               privateKey: Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey.rawRepresentation))
    }

    public func seal(_ plaintext: [UInt8], to peer: NodePublic) throws -> [UInt8] {
        let n = nonce()
        guard n.count == DERPWire.nonceLength else { throw DERPProtocolError(.boxOpenFailed) }
        return n + (try sharedKey(peer).seal(plaintext, nonce: n))
    }

    public func open(_ sealed: [UInt8], from peer: NodePublic) throws -> [UInt8] {
        guard sealed.count >= DERPWire.nonceLength else { throw DERPProtocolError(.boxOpenFailed) }
        let n = Array(sealed[0..<DERPWire.nonceLength])
        return try sharedKey(peer).open(Array(sealed[DERPWire.nonceLength...]), nonce: n)
    }
}
