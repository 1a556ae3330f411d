// Protocol constants from the WireGuard paper (Donenfeld, NDSS 2017), section 6 and 5.4.

public enum WireGuardConstants {
    /// "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
    public static let construction = Array("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s".utf8)
    /// "WireGuard v1 zx2c4 Jason@zx2c4.com"
    public static let identifier = Array("WireGuard v1 zx2c4 Jason@zx2c4.com".utf8)
    public static let labelMAC1 = Array("mac1----".utf8)
    public static let labelCookie = Array("cookie--".utf8)

    public static let rekeyAfterMessages: UInt64 = 1 << 60
    public static let rejectAfterMessages: UInt64 = UInt64.max - (1 << 13)
    public static let rekeyAfterTime: Duration = .seconds(120)
    public static let rejectAfterTime: Duration = .seconds(180)
    public static let rekeyAttemptTime: Duration = .seconds(90)
    public static let rekeyTimeout: Duration = .seconds(5)
    public static let keepaliveTimeout: Duration = .seconds(10)
    /// How long a cookie stays valid, and how often the secret behind it changes.
    public static let cookieRefreshTime: Duration = .seconds(120)
}
