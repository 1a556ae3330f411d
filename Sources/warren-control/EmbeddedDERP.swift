// The DERP relay and STUN server that warren-control runs beside itself, and the DERP map region that
// points clients at them (its self-signed certificate pinned with CertName "sha256-raw:<hex>").

import Foundation
import Logging
import ServiceLifecycle
import TailscaleKeys
import WarrenControlServer
import WarrenDERPServer
import WarrenDERPTransport
import WarrenPacket
import WarrenTailcfg

struct EmbeddedDERP {
    var services: [any Service]
    var region: DERPRegion
    var server: DERPServer
    var stun: STUNServer?

    struct Settings {
        var host: String
        var port: Int
        var stunPort: Int
        var regionID: Int = 900
        /// The relay is served on the control listener (HTTPS, `GET /derp` upgrade) at this port, with the
        /// listener's own certificate: no listener of its own and no pinned certificate.
        var mountedOnPort: Int?
    }

    static func start(settings: Settings, stateDir: String, logger: Logger) async throws -> EmbeddedDERP {
        let directory = stateDir + "/derp"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let key = try loadOrCreateKey(path: directory + "/derp.key")
        let server = DERPServer(configuration: DERPServerConfiguration(privateKey: key, logger: logger))
        var services: [any Service] = []
        var derpPort = settings.mountedOnPort ?? settings.port
        var pin: String?
        if settings.mountedOnPort == nil {
            let certificate = try DERPCertificate.loadOrCreateSelfSigned(directory: directory, hostnames: [settings.host])
            let listener = try DERPListener(server: server, host: settings.host, port: settings.port,
                                            tlsConfiguration: try certificate.serverTLSConfiguration())
            let bound = try await listener.bind()
            services.append(listener)
            derpPort = bound.port ?? settings.port
            pin = certificate.pin
        }
        var stunPort = -1
        var stunServer: STUNServer?
        if settings.stunPort > 0 {
            let stun = STUNServer(addresses: [(settings.host, settings.stunPort)], logger: logger)
            _ = try await stun.bind()
            services.append(stun)
            stunServer = stun
            stunPort = settings.stunPort
        }
        var node = DERPNode(name: "\(settings.regionID)a", regionID: settings.regionID, hostName: settings.host)
        let address = IPAddress(settings.host)
        if let address {
            node.ipv4 = address.version == .v4 ? settings.host : "none"
            node.ipv6 = address.version == .v6 ? settings.host : "none"
        }
        node.derpPort = derpPort
        node.stunPort = stunPort
        node.certName = pin
        let region = DERPRegion(regionID: settings.regionID, regionCode: "warren", regionName: "Warren embedded relay",
                                nodes: [node])
        logger.info("embedded DERP relay ready", metadata: [
            "port": "\(node.derpPort ?? 0)", "stun": "\(stunPort)", "CertName": "\(pin ?? "(the control listener's certificate)")"])
        return EmbeddedDERP(services: services, region: region, server: server, stun: stunServer)
    }

    static func loadOrCreateKey(path: String) throws -> NodePrivate {
        if let data = FileManager.default.contents(atPath: path) {
            return try NodePrivate(parsing: String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        }
        var generator = SystemRandomNumberGenerator()
        let key = NodePrivate.generate(using: &generator)
        guard FileManager.default.createFile(atPath: path, contents: Data((key.textRepresentation + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw ControlKeyFileError(path: path)
        }
        return key
    }
}

struct ControlKeyFileError: Error, CustomStringConvertible {
    var path: String
    var description: String { "cannot write \(path)" }
}
