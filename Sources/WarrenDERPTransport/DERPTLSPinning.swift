// Client-side certificate checks that match what Tailscale's client does for a DERP node.

import Foundation
internal import Crypto
public import NIOSSL
public import NIOCore

/// How a DERP client trusts the server's certificate.
public enum DERPServerTrust: Sendable, Hashable {
    /// The system's roots and host name checks.
    case system
    /// `CertName: "sha256-raw:<hex>"`: only the certificate with this SHA-256 is accepted.
    case pinned(String)
    /// `InsecureForTests: true`: any certificate (tests only).
    case insecureForTests
}

extension DERPServerTrust {
    /// A client TLS configuration for this trust mode. A pin is checked by ``verificationCallback``.
    public func clientTLSConfiguration() -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        switch self {
        case .system: break
        case .pinned: configuration.certificateVerification = .noHostnameVerification
        case .insecureForTests: configuration.certificateVerification = .none
        }
        return configuration
    }

    /// For ``pinned(_:)``, the callback that accepts exactly the pinned leaf certificate.
    public var verificationCallback: NIOSSLCustomVerificationCallback? {
        guard case .pinned(let pin) = self else { return nil }
        let want = pin.lowercased()
        return { certificates, promise in
            guard let leaf = certificates.first, let der = try? leaf.toDERBytes(),
                  DERPCertificate.pin(certificateDER: der) == want else {
                promise.succeed(.failed)
                return
            }
            promise.succeed(.certificateVerified)
        }
    }
}
