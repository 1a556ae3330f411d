import WarrenPacketIO

/// Implementation constants of the device (the protocol's own numbers are in `WireGuardConstants`).
public enum WireGuardDeviceConstants {
    /// The MTU of a new interface, as wireguard-go: 1500 - 80 (IPv6 + UDP + WireGuard overhead).
    public static let defaultMTU = PacketIOConstants.defaultMTU
    /// Packets per batch read from TUN or from a socket.
    public static let batchSize = PacketIOConstants.batchSize
    /// Bytes of a transport data message before the ciphertext: type, receiver index, counter.
    public static let dataHeaderSize = 16
    /// Room after a packet for padding to 16 bytes and the 16-byte Poly1305 tag.
    public static let tailroom = PacketIOConstants.tailroom
    /// Slot size of the packet buffers: a maximal UDP datagram or IP packet, plus head- and tailroom.
    public static let slotSize = PacketIOConstants.slotSize
    /// Packets held per peer while its handshake is in flight (wireguard-go: 1024).
    public static let stagedPacketLimit = 128
}

extension WireGuardDeviceConstants {
    /// Handshake messages per second above which the device is "under load" and answers
    /// handshake messages without a valid MAC2 with a cookie reply instead of processing them.
    public static let underLoadHandshakesPerSecond = 128
    /// Handshake messages queued for the handshake thread; more are dropped (wireguard-go: 4096).
    public static let handshakeQueueLimit = 1024
    /// Queued handshake messages from which the device counts as under load (wireguard-go: 1/8 of its queue).
    public static let underLoadQueueDepth = 128
}
