import Crypto

/// The text form of pre-auth keys and API keys: `wkey-<kind>-<prefix>-<secret>`, where the prefix (12 characters of
/// [a-z0-9]) is stored and shown, and the secret (64 lowercase hex digits, 256 random bits) is stored only as its
/// SHA-256. Pre-auth keys are `wkey-auth-…`, API keys `wkey-api-…`.
public struct SecretKeyText: Hashable, Sendable {
    public enum Kind: String, Sendable, Hashable {
        case preAuth = "auth"
        case api = "api"
    }

    public static let prefixLength = 12
    public static let secretLength = 64

    public let kind: Kind
    public let prefix: String
    /// The secret part (keep it out of logs).
    public let secret: String

    /// A fresh key from `generator` (the caller passes the system's random generator outside tests).
    public static func generate(_ kind: Kind, using generator: inout some RandomNumberGenerator) -> SecretKeyText {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        let prefix = String((0..<prefixLength).map { _ in alphabet[Int(generator.next(upperBound: UInt32(alphabet.count)))] })
        let hex = Array("0123456789abcdef")
        let secret = String((0..<secretLength).map { _ in hex[Int(generator.next(upperBound: UInt32(16)))] })
        return SecretKeyText(kind: kind, prefix: prefix, secret: secret)
    }

    init(kind: Kind, prefix: String, secret: String) {
        self.kind = kind
        self.prefix = prefix
        self.secret = secret
    }

    /// Parses the full text; nil for anything else (never throws or traps on arbitrary input).
    public init?(parsing text: some StringProtocol, kind: Kind) {
        let head = "wkey-\(kind.rawValue)-"
        guard text.utf8.count == head.utf8.count + Self.prefixLength + 1 + Self.secretLength,
              text.hasPrefix(head) else { return nil }
        let rest = text.dropFirst(head.count)
        let prefix = rest.prefix(Self.prefixLength)
        let afterPrefix = rest.dropFirst(Self.prefixLength)
        guard afterPrefix.first == "-" else { return nil }
        let secret = afterPrefix.dropFirst()
        guard Self.isPrefixText(prefix),
              secret.count == Self.secretLength,
              secret.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        self.init(kind: kind, prefix: String(prefix), secret: String(secret))
    }

    /// headscale's legacy pre-auth key (before 0.28: 24 random bytes as 48 lowercase hex digits, kept in plain text),
    /// brought over by `warren-control import headscale`: read as a pre-auth key whose prefix is the first 12 digits
    /// and whose secret is the other 36, so only its SHA-256 is stored and the same text keeps working. nil otherwise.
    public init?(headscaleLegacyPreAuthKey text: some StringProtocol) {
        guard text.utf8.count == 48, text.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return nil }
        self.init(kind: .preAuth, prefix: String(text.prefix(12)), secret: String(text.dropFirst(12)))
    }

    /// Whether `text` has the shape of a stored prefix.
    public static func isPrefixText(_ text: some StringProtocol) -> Bool {
        text.utf8.count == prefixLength
            && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) }
    }

    public var text: String { "wkey-\(kind.rawValue)-\(prefix)-\(secret)" }

    public var secretHash: [UInt8] { Self.hash(secret: secret) }

    public static func hash(secret: String) -> [UInt8] { Array(SHA256.hash(data: Array(secret.utf8))) }

    /// Whether this key's secret hashes to `storedHash`, compared in constant time.
    public func matches(storedHash: [UInt8]) -> Bool {
        let computed = secretHash
        guard computed.count == storedHash.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(computed, storedHash) { difference |= a ^ b }
        return difference == 0
    }
}
