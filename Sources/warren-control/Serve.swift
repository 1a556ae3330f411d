// `warren-control serve`: flags and the YAML file in, a running control server out. Wiring only.

import ArgumentParser
import Foundation
import Logging
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import TailscaleKeys
import UnixSignals
import WarrenControlMetrics
import WarrenControlServer
import WarrenControlSQLite
import WarrenControlStore
import WarrenDERPServer
import WarrenListenerGuard
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the coordination server.")

    @Option(name: .long, help: "Directory for the server's key and database (default: state_dir from --config, else /var/lib/warren).")
    var stateDir: String?

    @Option(name: .long, help: "Address and port to listen on for clients (host:port).")
    var listen: String?

    @Option(name: .long, help: "Address and port for Prometheus metrics (host:port), or \"off\". Default: 127.0.0.1:9090.")
    var metricsListen: String?

    @Option(name: .long, help: "YAML configuration file.")
    var config: String?

    @Option(name: .long, help: "The URL clients reach this server at (server_url); required when listening on all interfaces.")
    var serverURL: String?

    /// The SQLite database inside the state directory (shared with the admin commands).
    static func databasePath(stateDir: String) -> String { stateDir + "/warren.sqlite" }

    func run() async throws {
        var file = ServeConfigFile()
        if let config {
            do {
                file = try ServeConfigFile.load(path: config)
            } catch let error as ConfigError {
                Console.printError("warren-control: \(error)")
                throw ExitCode(2)
            }
        }
        let settings: ServeSettings
        do {
            settings = try ServeSettings.resolve(file: file, stateDir: stateDir, listen: listen, metricsListen: metricsListen,
                                                 serverURL: serverURL)
        } catch {
            Console.printError("warren-control: \(error)")
            throw ExitCode(2)
        }
        let logLevel = settings.logLevel
        switch settings.logFormat {
        case .text:
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = logLevel
                return handler
            }
        case .json:
            LoggingSystem.bootstrap { label in
                var handler = JSONLogHandler(label: label)
                handler.logLevel = logLevel
                return handler
            }
        }
        let logger = Logger(label: "warren.control")
        // The signal handlers come first: from here on SIGTERM, SIGINT and SIGQUIT stop the server gracefully (even
        // while it starts, and right after it announces itself) and SIGHUP re-reads the policy file; none of them
        // ends the process with the default action.
        let signals = await UnixSignalsSequence(trapping: .sigterm, .sigint, .sigquit, .sighup)
        // headscale keys known but not implemented: one line each, before anything else happens.
        for warning in file.headscale.warnings {
            logger.warning("configuration: \(warning)")
        }
        // Every connection holds a descriptor: take what the hard limit allows, and size the default caps by it.
        let descriptors = DescriptorLimit.raise()
        logger.info("open-file limit", metadata: ["soft": "\(descriptors.soft)", "hard": "\(descriptors.hard)"])
        let defaultCap = ListenerSettings.defaultCap(descriptorLimit: descriptors.soft)
        let controlLimits = file.listeners.limits(for: \.control, defaultCap: defaultCap,
                                                  defaultIdle: ListenerSettings.controlIdleDefault)
        let derpLimits = file.listeners.limits(for: \.derp, defaultCap: defaultCap, defaultIdle: ListenerSettings.derpIdleDefault)
        let metricsLimits = file.listeners.limits(for: \.metrics, defaultCap: 64, defaultIdle: ListenerSettings.metricsIdleDefault)
        let adminLimits = file.listeners.limits(for: \.admin, defaultCap: 64, defaultIdle: ListenerSettings.adminIdleDefault)

        let stateDir = settings.stateDir
        let (host, port) = (settings.listenHost, settings.listenPort)
        let metricsAddress = settings.metricsAddress
        let metrics = ControlMetricsRegistry()
        // Two listeners on one port: say which, before anything is written.
        if let clash = settings.portClash(file: file) {
            Console.printError("warren-control: \(clash)")
            throw ExitCode(2)
        }
        // A database path naming headscale's own database: refused before Warren's schema is written into it.
        do {
            try settings.checkDatabase()
        } catch {
            Console.printError("warren-control: \(error)")
            throw ExitCode(2)
        }
        let controlKey: MachinePrivate
        do {
            try ServeCommand.prepareStateDirectory(stateDir)
        } catch {
            Console.printError("warren-control: state directory \(stateDir): \(error)")
            throw ExitCode(1)
        }
        do {
            // headscale's noise.private_key_path and database.sqlite.path may be outside the state directory.
            for path in [settings.controlKeyPath, settings.postgres == nil ? settings.databasePath : nil, settings.adminSocketPath,
                         file.headscale.derpKeyPath].compactMap({ $0 }) {
                let directory = (path as NSString).deletingLastPathComponent
                if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
                    try ServeCommand.prepareStateDirectory(directory)
                }
            }
            controlKey = try ControlKeyFile.loadOrCreate(path: settings.controlKeyPath)
        } catch {
            Console.printError("warren-control: control key \(settings.controlKeyPath): \(error)")
            throw ExitCode(1)
        }

        // A wildcard listen address comes with server_url (ServeSettings.resolve refuses it otherwise).
        let displayHost = host == "0.0.0.0" || host == "::" ? "127.0.0.1" : host
        let tlsContext: NIOSSLContext?
        do {
            tlsContext = try file.tls?.context()
        } catch {
            Console.printError("warren-control: tls: \(error)")
            throw ExitCode(2)
        }
        var configuration = ControlConfiguration(serverURL: settings.advertisedURL(tls: file.tls != nil))
        file.apply(to: &configuration)
        // --server-url wins over the file's server_url (which apply() may have set).
        if let explicit = settings.serverURL { configuration.serverURL = explicit }

        var extraServices: [any Service] = []
        var derpServer: DERPServer?
        var derpRevalidator: DERPRevalidator?
        // The embedded relay serves the live nodes of this tailnet only (the engine is set once it is loaded).
        let derpAdmission = EngineAdmission()
        var embeddedRegion: DERPRegion?
        if settings.derpEnabled {
            // On a wildcard listener the relay takes server_url's host when it is an address (one of this host's);
            // a name there leaves it on loopback as before (set derp.host to announce it elsewhere).
            let urlHost = URL(string: configuration.serverURL)?.host.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "[]")) }
            let wildcardHost = urlHost.flatMap { IPAddress($0) == nil ? nil : $0 } ?? displayHost
            let derpHost = file.derpHost ?? (ServeSettings.isWildcard(host) ? wildcardHost : host)
            // With TLS the relay is mounted on the control listener (its certificate, no pin), as headscale
            // does; a listener on port 0 has no port to announce yet, so the relay then keeps its own.
            let mounted = file.tls != nil && port != 0 && file.derpPort == nil
            let derp = try await EmbeddedDERP.start(
                settings: .init(host: derpHost, port: file.derpPort ?? 8443, stunPort: file.stunPort ?? 3478,
                                mountedOnPort: mounted ? port : nil, admission: derpAdmission.admission,
                                revalidation: derpAdmission.revalidation,
                                limits: ListenerLimits(maximumConnections: derpLimits.maximumConnections,
                                                       handshakeTimeout: derpLimits.handshakeTimeout,
                                                       idleTimeout: min(derpLimits.idleTimeout ?? .seconds(60), .seconds(60)),
                                                       acceptBackoff: derpLimits.acceptBackoff),
                                idleTimeout: derpLimits.idleTimeout,
                                regionID: file.headscale.derpRegionID ?? 900,
                                regionCode: file.headscale.derpRegionCode ?? "warren",
                                regionName: file.headscale.derpRegionName ?? "Warren embedded relay",
                                ipv4: file.headscale.derpIPv4, ipv6: file.headscale.derpIPv6,
                                keyPath: file.headscale.derpKeyPath, stunSecondary: file.stunSecondary,
                                meshKey: file.derpMeshKey, meshPeers: file.derpMeshPeers),
                stateDir: stateDir, logger: logger)
            embeddedRegion = derp.region
            extraServices += derp.services
            if mounted { derpServer = derp.server }
            derpRevalidator = derp.revalidator
            metrics.watch(derp: derp.server)
            if let stun = derp.stun { metrics.watch(stun: stun) }
        }
        // The DERP map: derp.urls, derp.paths and the embedded region (DERPMapSources.swift).
        let derpMap = try await DERPMapSetup.start(file: file, embeddedRegion: embeddedRegion, logger: logger)
        configuration.derpMap = derpMap.map

        let store: any ControlStore
        do {
            store = try await settings.openStore(logger: logger)
        } catch let error as StoreError {
            Console.printError("warren-control: database (\(settings.databaseDescription)): \(error.message)")
            throw ExitCode(1)
        }
        let directory = try StoreDirectory(store: store, ipv4Prefix: configuration.ipv4Prefix,
                                           ipv6Prefix: configuration.ipv6Prefix)
        // The access policy: the configured file (file mode), else the version in force in the store, else allow-all
        // (database mode: `policy set` replaces it at run time).
        // `check` SSH actions delegate to this server's URL.
        // With oidc.groups_in_policy, a policy's groups also take in the users their identity provider puts in them.
        let options = CompileOptions(controlURL: configuration.serverURL, providerGroups: file.oidc?.groupsInPolicy ?? false)
        var policy = CompiledPolicy(policy: nil, options: options)
        if let compiled = file.policy {
            policy = CompiledPolicy(policy: compiled.policy, options: options)
        } else if let stored = try await store.read({ try $0.currentPolicy() }) {
            do {
                policy = CompiledPolicy(policy: try PolicyParser.parse(stored.text), options: options)
            } catch {
                Console.printError("warren-control: stored policy version \(stored.version) does not parse: \(error)")
                throw ExitCode(2)
            }
        }
        let engine = ControlEngine(configuration: configuration, directory: directory, policy: policy, logger: logger,
                                   metrics: metrics.control)
        // On PostgreSQL, other instances may serve the same tailnet: listen to them before loading it.
        let follower: (any Service)?
        do {
            follower = try await ClusterWiring.attach(store: store, engine: engine, storedPolicy: file.policy == nil, logger: logger)
        } catch {
            Console.printError("warren-control: database (\(settings.databaseDescription)): cannot follow other instances: \(error)")
            throw ExitCode(1)
        }
        if let follower { extraServices.append(follower) }
        try await engine.load()
        derpAdmission.set(engine)
        if let refresher = derpMap.refresher(engine: engine) { extraServices.append(refresher) }
        let admin = try await AdminWiring.start(store: store, engine: engine, configuration: configuration, stateDir: stateDir,
                                                socketPath: settings.adminSocketPath, socketMode: settings.adminSocketMode,
                                                policyFile: file.policyPath, limits: adminLimits,
                                                nodesChanged: { [derpRevalidator] in derpRevalidator?.checkNow() })
        // Admin API request counts and latencies by route template (the socket's and the network's requests alike).
        let adminMetrics = AdminRequestMetrics(registry: metrics.registry)
        admin.routes.api.observer.set { route, method, status, duration in
            adminMetrics.record(route: route, method: method, status: status, duration: duration)
        }
        var upgraders: UpgraderFactory?
        if let relay = derpServer {
            upgraders = { @Sendable () -> [any HTTPServerProtocolUpgrader] in [DERPHTTPUpgrader(server: relay)] }
        }
        // Sign-in with OIDC (`oidc:`): /register/<id> sends the browser to the provider, /oidc/callback approves.
        let oidc = OIDCWiring(section: file.oidc, store: store, engine: engine, logger: logger)
        var serverOptions = ControlServerOptions(
            host: host, port: port,
            extraRoutes: oidc.routes(next: HealthRoutes(store: store, next: ControlListenerRoutes(admin: admin.routes, derpMounted: derpServer != nil),
                                                        logger: logger)),
            extraUpgraders: upgraders, tls: tlsContext, limits: controlLimits)
        serverOptions.loginPage = oidc.loginPage
        let server = try await ControlHTTPServer.start(engine: engine, controlKey: controlKey, options: serverOptions, logger: logger)
        extraServices.append(NodeKeyExpiryWatcher(engine: engine))
        if settings.serverURL == nil, port == 0, let actual = server.port {
            configuration.serverURL = settings.advertisedURL(tls: file.tls != nil, port: actual)
            await engine.setServerURL(configuration.serverURL)
        }
        do {
            try await oidc.start(serverURL: configuration.serverURL)
        } catch {
            Console.printError("warren-control: oidc: \(error)")
            throw ExitCode(1)
        }
        if let (metricsHost, metricsPort) = metricsAddress {
            let listener = try await MetricsListener.start(metrics: metrics, host: metricsHost, port: metricsPort,
                                                           limits: metricsLimits, logger: logger)
            extraServices.append(listener)
            print("metrics: http://\(metricsHost.contains(":") ? "[\(metricsHost)]" : metricsHost):\(listener.port ?? metricsPort)/metrics")
        }
        print("warren-control is serving; point clients at: \(configuration.serverURL)")
        print("  tailscale up --login-server \(configuration.serverURL)")
        fflush(nil)

        let group = ServiceGroup(configuration: .init(
            services: ([server, admin.server] + extraServices).map { .init(service: $0) }, logger: logger))
        let reloader = PolicyFileReloader(path: file.policyPath, engine: engine, logger: logger)
        let signalLoop = Task {
            for await signal in signals {
                if signal == .sighup {
                    logger.info("SIGHUP: reloading the policy")
                    await reloader.reload()
                } else {
                    logger.info("\(signal): shutting down gracefully")
                    await group.triggerGracefulShutdown()
                }
            }
        }
        defer { signalLoop.cancel() }
        try await group.run()
    }
}

extension ServeCommand {
    /// The first pair of TCP listeners that would bind the same port (a wildcard host overlaps every host), named.
    static func portClash(control: (String, Int), metrics: (String, Int)?, derp: (String, Int)?) -> String? {
        let listeners: [(name: String, address: (String, Int))] = [("control listener (--listen/listen_addr)", control)]
            + (metrics.map { [("metrics listener (--metrics-listen/metrics_listen_addr)", $0)] } ?? [])
            + (derp.map { [("embedded DERP listener (derp.port)", $0)] } ?? [])
        func wildcard(_ host: String) -> Bool { ["0.0.0.0", "::", "", "*"].contains(host) }
        for i in listeners.indices {
            for j in listeners.indices where j > i {
                let (a, b) = (listeners[i].address, listeners[j].address)
                guard a.1 != 0, a.1 == b.1, a.0 == b.0 || wildcard(a.0) || wildcard(b.0) else { continue }
                return "the \(listeners[i].name) and the \(listeners[j].name) both want port \(a.1); give one another port"
            }
        }
        return nil
    }

    /// Creates the state directory (0700) and checks that it can be written, with an error that says why not.
    static func prepareStateDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw ValidationError("cannot create it (\((error as NSError).localizedDescription))")
        }
        let probe = path + "/.write-test-\(getpid())"
        guard FileManager.default.createFile(atPath: probe, contents: Data()) else {
            throw ValidationError("cannot write in it (read-only or not permitted: \(String(cString: strerror(errno))))")
        }
        unlink(probe)
    }
}

enum ControlKeyFile {
    /// The server's Noise key, created on first start and kept (clients cache its public half).
    static func loadOrCreate(path: String) throws -> MachinePrivate {
        if let data = FileManager.default.contents(atPath: path) {
            let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            do {
                return try MachinePrivate(parsing: text)
            } catch {
                throw ValidationError("\(path): not a control key (\(error))")
            }
        }
        var generator = SystemRandomNumberGenerator()
        let key = MachinePrivate.generate(using: &generator)
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data((key.textRepresentation + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw ValidationError("cannot write \(temporary)")
        }
        guard rename(temporary, path) == 0 else { throw ValidationError("cannot create \(path)") }
        return key
    }
}
