// The DERP relay and STUN server that warren-control runs beside itself, and the DERP map region that
// points clients at them (its self-signed certificate pinned with CertName "sha256-raw:<hex>").
//
// Several instances serving one tailnet make their embedded relays one region, as Tailscale's regions of several
// derpers are (`derp.mesh_with` / headscale layout `derp.server.mesh_with`, and the shared key in
// `derp.mesh_key_path`): each relay accepts the others' mesh connections (the key in ClientInfo), watches their
// clients and forwards packets for keys connected there (DERPMesh, as warren-derp --mesh-with), and the region
// this instance announces lists its own relay first and then every peer as a node of the region. Tailscale's
// client homes on the first node of a region that answers, so each instance's clients home on that instance's
// relay, and two peers homed on different relays reach each other through the mesh.

import DERPProtocol
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import TailscaleKeys
import WarrenControlServer
import WarrenDERPServer
import WarrenDERPTransport
import WarrenListenerGuard
import WarrenPacket
import Synchronization
import WarrenTailcfg

struct EmbeddedDERP {
    var services: [any Service]
    var region: DERPRegion
    var server: DERPServer
    var stun: STUNServer?
    /// Disconnects nodes whose admission was taken back (deleted, expired); `checkNow()` after admin changes.
    var revalidator: DERPRevalidator?

    struct Settings {
        var host: String
        var port: Int
        var stunPort: Int
        /// The relay is served on the control listener (HTTPS, `GET /derp` upgrade) at this port, with the
        /// listener's own certificate: no listener of its own and no pinned certificate.
        var mountedOnPort: Int?
        /// Who may use the relay: warren-control passes the live nodes of its tailnet (``EngineAdmission``).
        var admission: DERPAdmission
        /// Which connected keys may stay (asked every `revalidationInterval` and on `checkNow()`); nil: never asked again.
        var revalidation: DERPRevalidation?
        var revalidationInterval: Duration = .seconds(1)
        /// The relay's own listener's cap and timers (not used when mounted).
        var limits: ListenerLimits = .unlimited
        /// An upgraded DERP connection that reads nothing for this long is closed.
        var idleTimeout: TimeAmount? = .seconds(180)
        /// The region as the DERP map names it (headscale's derp.server.region_id, region_code, region_name).
        var regionID: Int = 900
        var regionCode: String = "warren"
        var regionName: String = "Warren embedded relay"
        /// Addresses put in the DERP map beside the host name (headscale's derp.server.ipv4, ipv6).
        var ipv4: String?
        var ipv6: String?
        /// The relay's key file (headscale's derp.server.private_key_path); default `<stateDir>/derp/derp.key`.
        var keyPath: String?
        /// A second STUN address (`derp.stun_secondary_addr`), announced as a STUN-only node of the region: with
        /// two STUN servers at different addresses netcheck can tell whether the NAT maps by destination.
        var stunSecondary: (host: String, port: Int)?
        /// The mesh key (`derp.mesh_key_path`): clients presenting it are trusted relays of this region.
        var meshKey: DERPMeshKey?
        /// The other relays of the region (`derp.mesh_with`): meshed with (needs `meshKey`) and announced as nodes.
        var meshPeers: [MeshPeer] = []
    }

    /// Another relay of the embedded region (`derp.mesh_with` entry).
    struct MeshPeer: Equatable, CustomStringConvertible {
        var host: String
        var port: Int
        /// `sha256-raw:<hex>`: its certificate's pin (a self-signed relay), used to dial it and put in the DERP map;
        /// nil: its certificate is checked against the system's roots (a relay mounted on a TLS control listener).
        var certName: String?
        /// Its STUN port in the DERP map; nil: this instance's own (`derp.stun_port`), 0: none.
        var stunPort: Int?

        var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    static func start(settings: Settings, stateDir: String, logger: Logger) async throws -> EmbeddedDERP {
        let directory = stateDir + "/derp"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let key = try loadOrCreateKey(path: settings.keyPath ?? directory + "/derp.key")
        var configuration = DERPServerConfiguration(privateKey: key, logger: logger)
        configuration.admission = settings.admission
        configuration.idleTimeout = settings.idleTimeout
        // Relays presenting the mesh key skip admission and may watch and forward (the incoming half of the mesh).
        configuration.meshKey = settings.meshKey
        var mesh: DERPMesh?
        if let meshKey = settings.meshKey, !settings.meshPeers.isEmpty {
            let made = DERPMesh(peers: settings.meshPeers.map {
                DERPMesh.Peer(host: $0.host, port: $0.port, trust: $0.certName.map { .pinned($0) } ?? .system)
            }, privateKey: key, meshKey: meshKey, logger: logger)
            configuration.meshForwarder = made
            mesh = made
        }
        let server = DERPServer(configuration: configuration)
        mesh?.attach(server)
        var services: [any Service] = []
        var derpPort = settings.mountedOnPort ?? settings.port
        var pin: String?
        if settings.mountedOnPort == nil {
            let certificate = try DERPCertificate.loadOrCreateSelfSigned(directory: directory, hostnames: [settings.host])
            let listener = try DERPListener(server: server, host: settings.host, port: settings.port,
                                            tlsConfiguration: try certificate.serverTLSConfiguration(), limits: settings.limits)
            let bound = try await listener.bind()
            services.append(listener)
            derpPort = bound.port ?? settings.port
            pin = certificate.pin
        }
        var revalidator: DERPRevalidator?
        if let revalidation = settings.revalidation {
            let watcher = DERPRevalidator(server: server, interval: settings.revalidationInterval, stillAdmitted: revalidation)
            services.append(watcher)
            revalidator = watcher
        }
        if let mesh { services.append(EmbeddedDERPMeshService(mesh: mesh)) }
        var stunPort = -1
        var stunServer: STUNServer?
        let stunAddresses = (settings.stunPort > 0 ? [(settings.host, settings.stunPort)] : []) + (settings.stunSecondary.map { [$0] } ?? [])
        if !stunAddresses.isEmpty {
            let stun = STUNServer(addresses: stunAddresses, logger: logger)
            _ = try await stun.bind()
            services.append(stun)
            stunServer = stun
            if settings.stunPort > 0 { stunPort = settings.stunPort }
        }
        var node = DERPNode(name: "\(settings.regionID)a", regionID: settings.regionID, hostName: settings.host)
        let address = IPAddress(settings.host)
        if let address {
            node.ipv4 = address.version == .v4 ? settings.host : "none"
            node.ipv6 = address.version == .v6 ? settings.host : "none"
        }
        if let ipv4 = settings.ipv4 { node.ipv4 = ipv4 }
        if let ipv6 = settings.ipv6 { node.ipv6 = ipv6 }
        node.derpPort = derpPort
        node.stunPort = stunPort
        node.certName = pin
        var nodes = [node]
        if let (host, port) = settings.stunSecondary {
            // STUN only: clients never pick it as their relay; netcheck probes it beside the first node.
            var second = DERPNode(name: "\(settings.regionID)b", regionID: settings.regionID, hostName: host)
            let version = IPAddress(host)?.version
            second.ipv4 = version == .v4 ? host : "none"
            second.ipv6 = version == .v6 ? host : "none"
            second.stunPort = port
            second.stunOnly = true
            nodes.append(second)
        }
        nodes += meshNodes(settings.meshPeers, regionID: settings.regionID, own: node, defaultSTUNPort: stunPort,
                           taken: Set(nodes.map(\.name)))
        let region = DERPRegion(regionID: settings.regionID, regionCode: settings.regionCode, regionName: settings.regionName,
                                nodes: nodes)
        logger.info("embedded DERP relay ready", metadata: [
            "port": "\(node.derpPort ?? 0)", "stun": "\(stunPort)", "CertName": "\(pin ?? "(the control listener's certificate)")"])
        if settings.meshKey != nil {
            logger.info("embedded DERP relay: mesh", metadata: [
                "peers": "\(settings.meshPeers.map(\.description).joined(separator: ","))",
                "region nodes": "\(nodes.filter { $0.stunOnly != true }.map(\.name).joined(separator: ","))"])
        }
        return EmbeddedDERP(services: services, region: region, server: server, stun: stunServer, revalidator: revalidator)
    }

    /// The mesh peers as nodes of the embedded region, after this relay's own node(s): each with its own host, DERP
    /// port, pin and STUN port. A peer that is this relay itself (its host and port are the own node's) is left
    /// out, so every instance can be given the same list (DERPMesh drops it from the mesh by its key).
    static func meshNodes(_ peers: [MeshPeer], regionID: Int, own: DERPNode, defaultSTUNPort: Int,
                          taken: Set<String>) -> [DERPNode] {
        var names = taken
        var out: [DERPNode] = []
        var seen: Set<String> = []
        for peer in peers {
            let ownHosts = [own.hostName, own.ipv4, own.ipv6].compactMap { $0 }
            if peer.port == (own.derpPort ?? 443), ownHosts.contains(peer.host) { continue }
            guard seen.insert(peer.description).inserted else { continue }
            // Names as Tailscale's ("900c", ...), after the own node's letters; past z by number.
            var name = ""
            for letter in "abcdefghijklmnopqrstuvwxyz" where !names.contains("\(regionID)\(letter)") {
                name = "\(regionID)\(letter)"
                break
            }
            if name.isEmpty { name = "\(regionID)-\(names.count + 1)" }
            names.insert(name)
            var node = DERPNode(name: name, regionID: regionID, hostName: peer.host)
            if let version = IPAddress(peer.host)?.version {
                node.ipv4 = version == .v4 ? peer.host : "none"
                node.ipv6 = version == .v6 ? peer.host : "none"
            }
            node.derpPort = peer.port
            node.stunPort = peer.stunPort.map { $0 == 0 ? -1 : $0 } ?? defaultSTUNPort
            node.certName = peer.certName
            out.append(node)
        }
        return out
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

/// The mesh's watch loops as a service of the server's group.
struct EmbeddedDERPMeshService: Service {
    let mesh: DERPMesh

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await mesh.run()
        }
    }
}

struct ControlKeyFileError: Error, CustomStringConvertible {
    var path: String
    var description: String { "cannot write \(path)" }
}

/// The embedded relay's admission: the node keys of registered, approved nodes whose keys have not expired, as
/// POST /verify answers. The relay starts before the engine; until the engine is set, everyone is refused.
final class EngineAdmission: Sendable {
    private let slot = Mutex<ControlEngine?>(nil)

    func set(_ engine: ControlEngine) { slot.withLock { $0 = engine } }

    var admission: DERPAdmission {
        { [self] key, _ in
            guard let engine = slot.withLock({ $0 }) else { return false }
            return await DERPAdmitEndpoint.admits(key, engine: engine)
        }
    }

    /// The same question for the keys connected now: the ones still live nodes (checked after login too, so that a
    /// node deleted or expired while connected is disconnected).
    var revalidation: DERPRevalidation {
        { [self] keys in
            guard let engine = slot.withLock({ $0 }) else { return [] }
            return await engine.liveNodeKeys(among: keys)
        }
    }
}
