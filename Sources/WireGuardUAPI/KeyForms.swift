// What the configuration protocol needs from WireGuardProtocol's key types beyond their hex forms.

public import WireGuardProtocol

extension WireGuardPrivateKey {
    /// Whether all 32 bytes are zero: in a `set=1` request, "remove the device's private key".
    public var isZero: Bool { rawRepresentation.reduce(0) { $0 | $1 } == 0 }

    /// Reads the UAPI's hex form as wireguard-go does: a non-zero key is clamped (RFC 7748
    /// section 5) on the way in, so that `get=1` later prints the clamped key; zero stays zero.
    static func fromUAPIHex(_ text: some StringProtocol) -> WireGuardPrivateKey? {
        guard var bytes = WireGuardPresharedKey(hex: text)?.rawRepresentation else { return nil }
        if bytes.contains(where: { $0 != 0 }) {
            bytes[0] &= 248
            bytes[31] = (bytes[31] & 127) | 64
        }
        return try? WireGuardPrivateKey(rawRepresentation: bytes)
    }
}
