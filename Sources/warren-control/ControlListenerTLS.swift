// HTTPS on the control listener (`tls: {cert_file, key_file}` in the YAML file), as headscale's
// tls_cert_path/tls_key_path: the control protocol, /key, the admin REST API, /verify and the embedded DERP
// relay (`GET /derp` with `Upgrade: DERP`, and its probe paths) all on --listen.

import Foundation
import NIOSSL
import WarrenControlServer
import WarrenDERPServer
import WarrenDERPTransport

/// The certificate chain and key named in the YAML file, checked at load time.
struct ControlTLSFiles {
    var certificateFile: String
    var keyFile: String
    var certificate: DERPCertificate

    /// Reads and checks both files; a problem names the YAML key.
    static func load(certificateFile: String, keyFile: String, configFile: String) throws -> ControlTLSFiles {
        func read(_ path: String, key: String) throws -> String {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ConfigError(file: configFile, key: key, problem: "cannot read \(path)")
            }
            return String(decoding: data, as: UTF8.self)
        }
        let certificatePEM = try read(certificateFile, key: "tls.cert_file")
        let keyPEM = try read(keyFile, key: "tls.key_file")
        do {
            _ = try NIOSSLCertificate.fromPEMBytes(Array(certificatePEM.utf8)).first.orThrow()
        } catch {
            throw ConfigError(file: configFile, key: "tls.cert_file", problem: "\(certificateFile) holds no PEM certificate")
        }
        do {
            _ = try NIOSSLPrivateKey(bytes: Array(keyPEM.utf8), format: .pem)
        } catch {
            throw ConfigError(file: configFile, key: "tls.key_file", problem: "\(keyFile) holds no PEM private key")
        }
        let certificate: DERPCertificate
        do {
            certificate = try DERPCertificate(certificatePEM: certificatePEM, privateKeyPEM: keyPEM)
            _ = try NIOSSLContext(configuration: certificate.serverTLSConfiguration())
        } catch {
            throw ConfigError(file: configFile, key: "tls", problem: "the certificate and key do not make a TLS server: \(error)")
        }
        return ControlTLSFiles(certificateFile: certificateFile, keyFile: keyFile, certificate: certificate)
    }

    func context() throws -> NIOSSLContext {
        var configuration = try certificate.serverTLSConfiguration()
        // HTTP/1.1 only: the control protocol upgrades from it (/ts2021, /derp).
        configuration.applicationProtocols = ["http/1.1"]
        return try NIOSSLContext(configuration: configuration)
    }
}

private struct MissingValue: Error {}

extension Optional {
    fileprivate func orThrow() throws -> Wrapped {
        guard let value = self else { throw MissingValue() }
        return value
    }
}

/// Routes on the control listener besides the built-in ones: the admin API, then the relay's probes
/// when the relay is mounted there.
struct ControlListenerRoutes: PlainHTTPRoutes {
    var admin: AdminRoutes
    var derpMounted: Bool

    func handle(_ request: PlainHTTPRequest) async -> PlainHTTPResponse? {
        if derpMounted, DERPServer.probePaths.contains(request.path) {
            let allowed = request.method == "GET" || request.method == "HEAD"
            return PlainHTTPResponse(status: allowed ? 200 : 405, body: [])
        }
        return await admin.handle(request)
    }
}
