/// The IP version of a raw packet, read from the high nibble of its first byte.
public enum IPVersion: UInt8, Sendable {
    case v4 = 4
    case v6 = 6

    /// Returns nil for an empty packet or a version other than 4 or 6.
    public init?<Bytes: Collection>(packet: Bytes) where Bytes.Element == UInt8 {
        guard let first = packet.first else { return nil }
        self.init(rawValue: first >> 4)
    }
}
