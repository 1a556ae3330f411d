/// Sizes the packet I/O implementations share with the WireGuard device (which re-exports them as
/// `WireGuardDeviceConstants`).
public enum PacketIOConstants {
    /// The MTU of a new interface, as wireguard-go: 1500 - 80 (IPv6 + UDP + WireGuard overhead).
    public static let defaultMTU = 1420
    /// Packets per batch read from TUN or from a socket.
    public static let batchSize = 64
    /// Room after a packet for padding to 16 bytes and the 16-byte Poly1305 tag.
    public static let tailroom = 32
    /// Slot size of the packet buffers: a maximal UDP datagram or IP packet, plus head- and tailroom.
    public static let slotSize = 65_536 + 64
}
