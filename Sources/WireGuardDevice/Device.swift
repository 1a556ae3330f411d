import WarrenLinux
import WireGuardProtocol

/// The userspace WireGuard device: moves packets between a TUN device and UDP.
public enum WireGuardDeviceInfo {
    public static let defaultMTU = 1420
}
