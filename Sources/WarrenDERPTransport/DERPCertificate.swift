// TLS certificates for a DERP relay: loaded from PEM files or self-signed at start, and pinned in
// the DERP map by `CertName: "sha256-raw:<hex of SHA-256 of the certificate's DER>"`
// (tailscale/tailscale:tailcfg/derpmap.go, cmd/derper/cert.go, net/tlsdial/tlsdial.go).
//
// A pinning client hashes the leaf certificate, checks the dialed host name against the
// certificate's names (so an IP literal must be an IP subject alternative name) and its validity
// dates; it ignores the issuer, so a self-signed certificate is the normal case.

import Foundation
internal import Crypto
internal import SwiftASN1
public import NIOSSL
internal import X509

public struct DERPCertificateError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A certificate and its private key, in PEM, with its pin.
public struct DERPCertificate: Sendable {
    public let certificatePEM: String
    public let privateKeyPEM: String
    /// The leaf certificate's DER bytes.
    public let certificateDER: [UInt8]

    /// Loads a certificate chain (the leaf first) and its private key from PEM text.
    public init(certificatePEM: String, privateKeyPEM: String) throws {
        let certificates: [NIOSSLCertificate]
        do { certificates = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)) } catch {
            throw DERPCertificateError("the certificate is not PEM: \(error)")
        }
        guard let leaf = certificates.first else { throw DERPCertificateError("the certificate file holds no certificate") }
        do { _ = try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem) } catch {
            throw DERPCertificateError("the private key is not PEM: \(error)")
        }
        self.certificatePEM = certificatePEM
        self.privateKeyPEM = privateKeyPEM
        self.certificateDER = try leaf.toDERBytes()
    }

    /// Reads `certificatePath` and `keyPath` (PEM).
    public static func load(certificatePath: String, keyPath: String) throws -> DERPCertificate {
        func read(_ path: String) throws -> String {
            do { return try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw DERPCertificateError("cannot read \(path): \(error.localizedDescription)")
            }
        }
        return try DERPCertificate(certificatePEM: read(certificatePath), privateKeyPEM: read(keyPath))
    }

    /// A new self-signed ECDSA P-256 certificate for `hostnames` (DNS names or IP literals), valid
    /// from an hour before `now` for `validity`.
    public static func selfSigned(hostnames: [String], now: Date = Date(),
                                  validity: TimeInterval = 10 * 365 * 24 * 3600) throws -> DERPCertificate {
        guard let first = hostnames.first else { throw DERPCertificateError("a certificate needs a host name") }
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName(first) }
        let names: [GeneralName] = hostnames.map { host in
            if let bytes = ipAddressBytes(host) { return .ipAddress(ASN1OctetString(contentBytes: bytes[...])) }
            return .dnsName(host)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth])
            SubjectAlternativeNames(names)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(validity),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: .init(key))
        return try DERPCertificate(certificatePEM: certificate.serializeAsPEM().pemString, privateKeyPEM: key.pemRepresentation)
    }

    /// The self-signed certificate kept in `directory` (`derp-cert.pem`, `derp-key.pem`), created on
    /// first use. A kept certificate that does not name every host in `hostnames` is replaced.
    public static func loadOrCreateSelfSigned(directory: String, hostnames: [String]) throws -> DERPCertificate {
        let certificatePath = (directory as NSString).appendingPathComponent("derp-cert.pem")
        let keyPath = (directory as NSString).appendingPathComponent("derp-key.pem")
        let files = FileManager.default
        if files.fileExists(atPath: certificatePath), files.fileExists(atPath: keyPath),
           let kept = try? load(certificatePath: certificatePath, keyPath: keyPath),
           (try? kept.names()).map({ Set(hostnames).isSubset(of: $0) }) == true {
            return kept
        }
        let made = try selfSigned(hostnames: hostnames)
        do {
            try files.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            guard files.createFile(atPath: keyPath, contents: Data(made.privateKeyPEM.utf8), attributes: [.posixPermissions: 0o600]),
                  files.createFile(atPath: certificatePath, contents: Data(made.certificatePEM.utf8), attributes: [.posixPermissions: 0o644])
            else { throw DERPCertificateError("cannot write the certificate into \(directory)") }
        }
        return made
    }

    /// `sha256-raw:<hex>`: the DERP map's `CertName` that pins this certificate.
    public var pin: String { DERPCertificate.pin(certificateDER: certificateDER) }

    public static func pin(certificateDER: [UInt8]) -> String {
        "sha256-raw:" + SHA256.hash(data: certificateDER).map { hexDigits[Int($0 >> 4)] + hexDigits[Int($0 & 0xF)] }.joined()
    }

    /// The DNS names and IP addresses (as text) the certificate is valid for.
    public func names() throws -> Set<String> {
        let certificate = try Certificate(derEncoded: certificateDER)
        var out = Set<String>()
        if let alternatives = try certificate.extensions.subjectAlternativeNames {
            for name in alternatives {
                switch name {
                case .dnsName(let dns): out.insert(dns)
                case .ipAddress(let octets): if let text = ipAddressText(Array(octets.bytes)) { out.insert(text) }
                default: continue
                }
            }
        }
        return out
    }

    /// A server TLS configuration presenting this certificate (TLS 1.2 and 1.3, as Go's client speaks).
    public func serverTLSConfiguration() throws -> TLSConfiguration {
        let chain = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        return configuration
    }
}

private let hexDigits = (0..<16).map { String($0, radix: 16) }

private func ipAddressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}

private func ipAddressText(_ bytes: [UInt8]) -> String? {
    let family: Int32
    switch bytes.count {
    case 4: family = AF_INET
    case 16: family = AF_INET6
    default: return nil
    }
    var out = [CChar](repeating: 0, count: 64)
    let ok = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &out, 64) != nil }
    guard ok else { return nil }
    return String(decoding: out.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
