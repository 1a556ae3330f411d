import Crypto
import Foundation
import HummingbirdBcrypt
import Synchronization

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

/// How a key record keeps its secret.
public enum SecretHashScheme: String, Hashable, Sendable, Codable, CaseIterable {
    /// SHA-256 of the secret (32 bytes): Warren's keys, and headscale's legacy plaintext pre-auth keys as imported.
    case sha256
    /// bcrypt of the secret, its text ("$2a$10$…") kept as UTF-8 bytes: headscale 0.28+ pre-auth keys and headscale's
    /// API keys, as `warren-control import headscale` carries them (headscale keeps only that hash).
    case bcrypt
}

/// A key text as presented by a client, in any form warren-control accepts: the prefix that finds the record and
/// the secret that is checked against the record's hash.
///
/// The forms: Warren's `wkey-<kind>-<prefix>-<secret>`; headscale 0.28+'s `hskey-auth-<prefix>-<secret>` and
/// `hskey-api-<prefix>-<secret>` (12 + 64 characters of the base64 URL-safe alphabet, split by position, since the
/// prefix may itself hold a "-"); headscale's legacy API keys `<7-character prefix>.<secret>`; headscale's legacy
/// plaintext pre-auth keys (48 hex digits, see `SecretKeyText(headscaleLegacyPreAuthKey:)`).
public struct PresentedKey: Sendable, Hashable {
    public let kind: SecretKeyText.Kind
    public let prefix: String
    /// The secret part (keep it out of logs).
    let secret: String

    /// headscale's key texts: "hskey-auth-" / "hskey-api-", then prefix and secret of these lengths.
    public static let headscalePrefixLength = 12
    public static let headscaleSecretLength = 64
    public static let headscaleLegacyAPIPrefixLength = 7

    init(kind: SecretKeyText.Kind, prefix: String, secret: String) {
        self.kind = kind
        self.prefix = prefix
        self.secret = secret
    }

    /// nil for anything that is none of the forms (never throws or traps on arbitrary input).
    public init?(parsing raw: some StringProtocol, kind: SecretKeyText.Kind) {
        let text = String(raw).trimmingCharacters(in: .whitespaces)
        if let key = SecretKeyText(parsing: text, kind: kind) {
            self.init(kind: kind, prefix: key.prefix, secret: key.secret)
            return
        }
        let head = kind == .preAuth ? "hskey-auth-" : "hskey-api-"
        if text.hasPrefix(head) {
            let rest = Array(text.utf8.dropFirst(head.utf8.count))
            let p = Self.headscalePrefixLength
            guard rest.count == p + 1 + Self.headscaleSecretLength, rest[p] == UInt8(ascii: "-"),
                  rest.allSatisfy(Self.isBase64URLSafe) else { return nil }
            self.init(kind: kind, prefix: String(decoding: rest[..<p], as: UTF8.self),
                      secret: String(decoding: rest[(p + 1)...], as: UTF8.self))
            return
        }
        switch kind {
        case .preAuth:
            guard let legacy = SecretKeyText(headscaleLegacyPreAuthKey: text) else { return nil }
            self.init(kind: .preAuth, prefix: legacy.prefix, secret: legacy.secret)
        case .api:
            // headscale's legacy API key: "<prefix>.<secret>", the prefix 7 characters.
            let bytes = Array(text.utf8)
            let p = Self.headscaleLegacyAPIPrefixLength
            guard bytes.count > p + 1, bytes.count <= p + 1 + 72, bytes[p] == UInt8(ascii: "."),
                  bytes[..<p].allSatisfy(Self.isBase64URLSafe), bytes[(p + 1)...].allSatisfy(Self.isBase64URLSafe) else { return nil }
            self.init(kind: .api, prefix: String(decoding: bytes[..<p], as: UTF8.self),
                      secret: String(decoding: bytes[(p + 1)...], as: UTF8.self))
        }
    }

    public static func isBase64URLSafe(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2D || byte == 0x5F
    }

    /// Whether the secret matches a record's hash made by `scheme`. SHA-256 is compared in constant time; bcrypt by
    /// the bcrypt check (slow by design: tens of milliseconds at headscale's cost 10), whose successes are remembered in
    /// memory (see `BcryptVerifications`), so a key in steady use costs one bcrypt check per process.
    public func matches(hash: [UInt8], scheme: SecretHashScheme) -> Bool {
        switch scheme {
        case .sha256:
            return SecretKeyText(kind: kind, prefix: prefix, secret: secret).matches(storedHash: hash)
        case .bcrypt:
            return BcryptVerifications.verify(secret: secret, hash: hash)
        }
    }
}

/// bcrypt checks of imported headscale keys, with a bounded memory of the (hash, secret) pairs that matched.
/// Entries are SHA-256 digests of hash and secret, so the memory holds no secret; a record that changes
/// (deleted, expired) is looked up before this is asked, so a remembered success never outlives its key.
enum BcryptVerifications {
    static let capacity = 4096
    private static let remembered = Mutex<Set<[UInt8]>>([])

    static func verify(secret: String, hash: [UInt8]) -> Bool {
        // A bcrypt text: "$2a$" / "$2b$" / "$2y$", a two-digit cost, "$", 53 characters of salt and hash.
        guard hash.count == 60, hash[0] == UInt8(ascii: "$"), hash[1] == UInt8(ascii: "2"), hash[3] == UInt8(ascii: "$"),
              [UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "y")].contains(hash[2]),
              hash.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }),
              secret.utf8.count <= 72 else { return false }
        var hasher = SHA256()
        hasher.update(data: hash)
        hasher.update(data: [0])
        hasher.update(data: Array(secret.utf8))
        let entry = Array(hasher.finalize())
        if remembered.withLock({ $0.contains(entry) }) { return true }
        guard Bcrypt.verify(secret, hash: String(decoding: hash, as: UTF8.self)) else { return false }
        remembered.withLock { set in
            if set.count >= capacity { set.removeAll() }
            set.insert(entry)
        }
        return true
    }
}
