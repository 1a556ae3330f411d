// The device runs over the seam in WarrenPacketIO (TunnelInterface, PacketBind, PacketBuffers) and its
// implementations (Linux TUN and UDP, in-memory twins), which live beside the device rather than inside it;
// re-exported so that code that drives a device sees them.

@_exported import WarrenPacketIO
