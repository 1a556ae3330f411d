import WireGuardProtocol

/// The AEAD the device uses for transport data.
public enum DataPathCipher {
    /// The fastest implementation available in this build.
    public static var preferred: any TransportCipher.Type { ChaChaPolyTransportCipher.self }
}
