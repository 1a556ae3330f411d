// warren-derp: the DERP relay and STUN server on their own.

import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import TailscaleKeys
import DERPProtocol
import WarrenDERPServer
import WarrenDERPTransport
import WarrenListenerGuard

@main
struct WarrenDERP: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warren-derp",
        abstract: "A DERP relay and STUN server for Warren and Tailscale clients.",
        discussion: """
            Serves DERP v2 over TLS at /derp, /derp/probe and /derp/latency-check, and STUN over UDP.
            With --state-dir and no --cert/--key it makes a self-signed certificate for --hostname and prints
            the DERP map's CertName (sha256-raw:...) that pins it.
            """)

    @Option(help: "TCP address for DERP over TLS, HOST:PORT or :PORT.")
    var listen = ":443"

    @Option(help: "UDP port for STUN on the same host (0 turns STUN off).")
    var stunPort = 3478

    @Option(help: "Host name or IP address clients dial; the self-signed certificate names it.")
    var hostname = "127.0.0.1"

    @Option(help: "PEM certificate chain (with --key).")
    var cert: String?

    @Option(help: "PEM private key (with --cert).")
    var key: String?

    @Option(help: "Directory for the relay's key and its self-signed certificate.")
    var stateDir = "/var/lib/warren/derp"

    @Option(help: "Admit only nodes this URL allows: POST {\"NodePublic\",\"Source\"} -> {\"Allow\":bool}.")
    var verifyClientsURL: String?

    @Option(help: "File holding a bearer token sent to --verify-clients-url.")
    var verifyClientsTokenFile: String?

    @Flag(help: "Admit clients when --verify-clients-url cannot be reached.")
    var verifyClientsFailOpen = false

    @Option(help: "File holding the 64-hex-digit mesh key; clients presenting it are trusted mesh peers.")
    var meshKeyFile: String?

    @Option(help: "Other relays of this region to mesh with, host[:port],... (default port 443): this relay watches which keys are connected there and forwards their packets (needs --mesh-key-file; this relay's own address in the list is ignored).")
    var meshWith: String?

    @Option(help: "How mesh peers' certificates are checked: system, sha256-raw:<hex> (pinned), insecure-for-tests. With --plain-http, peers are dialled without TLS.")
    var meshTrust = "system"

    @Option(help: "Connections open at once; more are closed as soon as accepted (0: no cap; default: from the open-file limit).")
    var maxConnections: Int?

    @Option(help: "Seconds a connection has for its TLS handshake and DERP upgrade request.")
    var handshakeTimeout = 15

    @Option(help: "Seconds a DERP connection may send nothing before it is closed (silent clients are pinged first).")
    var idleTimeout = 180

    @Flag(help: "Serve plain HTTP instead of TLS (only behind a TLS terminator or in tests).")
    var plainHTTP = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
        if !(0...65535).contains(stunPort) { throw ValidationError("--stun-port must be from 0 (no STUN) to 65535, not \(stunPort)") }
        if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("--log-level: unknown level \(logLevel)") }
        if let url = verifyClientsURL, URL(string: url)?.scheme.map({ ["http", "https"].contains($0) }) != true {
            throw ValidationError("--verify-clients-url must be an http:// or https:// URL")
        }
        _ = try ListenAddress(listen)
        if let maxConnections, !(0...1_000_000).contains(maxConnections) {
            throw ValidationError("--max-connections must be from 0 (no cap) to 1000000")
        }
        if let meshWith {
            guard meshKeyFile != nil else { throw ValidationError("--mesh-with needs --mesh-key-file (the key every relay of the mesh shares)") }
            _ = try MeshPeers.parse(meshWith, trust: meshTrust, plainHTTP: plainHTTP)
        }
        if !(1...600).contains(handshakeTimeout) { throw ValidationError("--handshake-timeout must be from 1 to 600 seconds") }
        if !(1...86_400).contains(idleTimeout) { throw ValidationError("--idle-timeout must be from 1 to 86400 seconds") }
    }

    func run() async throws {
        var logger = Logger(label: "warren.derp")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let address = try ListenAddress(listen)
        let descriptors = DescriptorLimit.raise()
        logger.info("open-file limit", metadata: ["soft": "\(descriptors.soft)", "hard": "\(descriptors.hard)"])
        let budget = descriptors.soft > 128 ? Int(min(descriptors.soft, 1 << 20)) - 128 : 64
        let limits = ListenerLimits(maximumConnections: maxConnections ?? min(65_536, max(64, budget * 9 / 10)),
                                    handshakeTimeout: .seconds(Int64(handshakeTimeout)),
                                    idleTimeout: .seconds(Int64(min(idleTimeout, 60))))

        var configuration = DERPServerConfiguration(privateKey: try DERPKeyFile.loadOrCreate(directory: stateDir), logger: logger)
        if let url = verifyClientsURL.flatMap(URL.init(string:)) {
            let token = try verifyClientsTokenFile.map { try String(contentsOfFile: $0, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) }
            configuration.admission = DERPHTTPAdmission.make(url: url, bearerToken: token, failOpen: verifyClientsFailOpen)
        } else {
            logger.warning("""
                OPEN RELAY: no --verify-clients-url, so this relay admits ANY node key and relays for anyone who can \
                reach it. Point --verify-clients-url at your control server's /verify (warren-control: \
                https://<control>/verify) to admit only your tailnet's nodes; see docs/derp-relay.md.
                """)
        }
        configuration.idleTimeout = .seconds(Int64(idleTimeout))
        if let meshKeyFile {
            guard let meshKey = DERPMeshKey(hex: try String(contentsOfFile: meshKeyFile, encoding: .utf8)) else {
                throw ValidationError("--mesh-key-file must hold 64 hex digits")
            }
            configuration.meshKey = meshKey
        }
        var mesh: DERPMesh?
        if let meshWith, let meshKey = configuration.meshKey {
            let peers = try MeshPeers.parse(meshWith, trust: meshTrust, plainHTTP: plainHTTP)
            let made = DERPMesh(peers: peers, privateKey: configuration.privateKey, meshKey: meshKey, logger: logger)
            configuration.meshForwarder = made
            mesh = made
        }
        let server = DERPServer(configuration: configuration)
        mesh?.attach(server)

        var tls: TLSConfigurationBox?
        if !plainHTTP {
            let certificate: DERPCertificate
            if let cert, let key {
                certificate = try DERPCertificate.load(certificatePath: cert, keyPath: key)
            } else {
                certificate = try DERPCertificate.loadOrCreateSelfSigned(directory: stateDir, hostnames: [hostname])
                logger.info("self-signed certificate; pin it in the DERP map", metadata: ["CertName": "\(certificate.pin)"])
            }
            tls = TLSConfigurationBox(value: try certificate.serverTLSConfiguration())
        }
        let listener = try DERPListener(server: server, host: address.host, port: address.port, tlsConfiguration: tls?.value,
                                        limits: limits)
        try await listener.bind()
        logger.info("DERP relay ready", metadata: ["server-key": "\(server.publicKey)"])

        var services: [any Service] = [listener]
        if stunPort != 0 {
            let stunHosts = address.host == "0.0.0.0" || address.host == "::" ? ["::"] : [address.host]
            let stun = STUNServer(addresses: stunHosts.map { ($0, stunPort) }, logger: logger)
            try await stun.bind()
            services.append(stun)
        }
        if let mesh {
            services.append(DERPMeshService(mesh: mesh))
            logger.info("DERP mesh", metadata: ["peers": "\(mesh.peers.map(\.description).joined(separator: ","))"])
        }
        let group = ServiceGroup(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
        logger.info("DERP relay stopped")
    }
}

struct TLSConfigurationBox {
    var value: TLSConfiguration
}


/// The mesh's watch loops as a service of the relay's group.
struct DERPMeshService: Service {
    let mesh: DERPMesh

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await mesh.run()
        }
    }
}
