// The node: the counterpart of tailscaled's LocalBackend, kept small by leaving each job to its
// engine. It owns the persisted state and the backend state machine, runs the control client, folds
// its map messages into the network map (WarrenNetMap), and reconciles the engines to the map's
// derivations as whole desired states: magicsock's peers and relay map, the WireGuard device's
// peers, the router's addresses and routes, and the packet filter. It answers the LocalAPI.

import DiscoProtocol
import Foundation
import Logging
import NIOCore
import NIOSSL
import TailscaleKeys
import WarrenDNSServer
import WarrenLinux
import WarrenLocalAPI
import WarrenMagicsock
import WarrenNetMap
import WarrenNodeControl
import WarrenPacket
import WarrenTailcfg
import WireGuardDevice
import WireGuardProtocol

public actor WarrenNode: LocalBackend {
    public static let version = "0.1.0"

    public let options: NodeOptions
    let logger: Logger
    let store: NodeStateStore
    var persisted: NodePersistedState
    var machine: BackendStateMachine
    var netmap = NetworkMap()
    let discoKey: DiscoPrivate

    // Engines.
    let tun: FilteringTUN
    let magic: Magicsock
    let device: WireGuardDevice
    let router: any RouterConfigurator
    /// SO_MARK of the node's own sockets (nil with an in-memory router).
    let socketMark: UInt32?
    let hostDNS: any HostDNSConfigurator
    var dnsServer: DNSServer?
    var dnsStarting = false
    var appliedHostDNS: OSDNSConfig?
    var hostDNSApplied = false
    var peerAPIChannels: [any Channel] = []
    var peerAPIAddresses: [IPAddress] = []
    var peerAPIStarting = false
    var peerAPIPort: UInt16 = 0
    var magicTask: Task<Void, Never>?
    var localAPI: LocalAPIServer?
    #if os(Linux)
    /// Answers peers' TSMP pings (only on a real TUN: in-memory twins have no system stack).
    var tsmpResponder: TSMPResponder?
    #endif

    // Control.
    var control: ControlClientService?
    var controlTasks: [Task<Void, Never>] = []
    /// Counts control client generations, so that events of a replaced client are ignored.
    var controlGeneration = 0
    var pendingAuthKey: String?

    // What was last applied.
    var appliedPeers: [NodePublic: WireGuardPeerConfig] = [:]
    var appliedRouter = RouterSettings()
    var health: [String] = []
    var stateWaiters: [UUID: CheckedContinuation<Void, Never>] = [:]
    var stopped = false
    var icmpSequence: UInt16 = 0

    /// Builds the engines (TUN, sockets, device) and loads the state; `start()` runs them.
    public init(options: NodeOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        store = NodeStateStore(directory: options.stateDirectory)
        persisted = try store.loadOrCreate()
        machine = BackendStateMachine(wantRunning: persisted.prefs.wantRunning)
        if persisted.registered { machine.apply(.login(.needsLogin(authURL: nil))) }
        var rng = SystemRandomNumberGenerator()
        discoKey = DiscoPrivate.generate(using: &rng)

        let rawTUN: any TunnelInterface
        if let make = options.makeTUN {
            rawTUN = try make(options.tunName, options.mtu)
        } else {
            #if os(Linux)
            rawTUN = try LinuxTUNInterface(name: options.tunName, mtu: options.mtu)
            #else
            throw RouterError(description: "TUN devices are supported on Linux only")
            #endif
        }
        tun = FilteringTUN(rawTUN)
        let bind: any PacketBind
        if let make = options.makeBind {
            bind = make()
        } else {
            #if os(Linux)
            bind = LinuxBind()
            #else
            throw RouterError(description: "UDP sockets are supported on Linux only")
            #endif
        }
        var configuration = Magicsock.Configuration(port: options.port, derpTrustOverride: options.derpTrustOverride,
                                                    stun: options.stun, tickInterval: options.magicsockTick)
        if let addresses = options.localAddresses { configuration.localAddresses = addresses }
        // With the system's router, the node's own sockets carry the bypass mark its policy rules know.
        socketMark = options.router == nil ? LinuxRouter.bypassMark : nil
        configuration.socketMark = socketMark
        magic = Magicsock(inner: bind, nodeKey: persisted.nodeKey, discoKey: discoKey, configuration: configuration, logger: logger)
        let deviceLog = logger
        let deviceLogger = DeviceLogger(level: logger.logLevel <= .debug ? .verbose : .error, prefix: "wireguard: ") { line in
            let text = line.trimmingCharacters(in: .newlines)
            if text.hasPrefix("ERROR") { deviceLog.error("\(text)") } else { deviceLog.debug("\(text)") }
        }
        device = WireGuardDevice(tun: tun, bind: magic, logger: deviceLogger)
        let routerLog = logger
        router = options.router ?? LinuxRouter(interface: options.tunName) { routerLog.warning("router: \($0)") }
        if let configured = options.hostDNS {
            hostDNS = configured
        } else if options.router != nil {
            hostDNS = MemoryHostDNS()
        } else if ResolvedLink.isManagingHost() {
            hostDNS = ResolvedLink(interface: options.tunName)
        } else {
            hostDNS = ResolvConfFile(backupPath: (options.stateDirectory as NSString).appendingPathComponent("resolv.conf.backup")) {
                routerLog.warning("host DNS: \($0)")
            }
        }
        let nodeKey = persisted.nodeKey
        try device.configure { c in c.setPrivateKey(try WireGuardPrivateKey(rawRepresentation: nodeKey.rawRepresentation)) }
    }

    /// Starts the device, magicsock's timers and the LocalAPI; logs in again if the node was running.
    public func start() async throws {
        try device.start()
        logger.info("warrend \(Self.version): \(tun.name), UDP port \(device.listenPort), node key \(persisted.nodeKey.publicKey)")
        magic.onEndpointsChanged { [weak self] endpoints, types in
            guard let self else { return }
            Task { await self.endpointsChanged(endpoints, types) }
        }
        magic.onNetcheckChanged { [weak self] result in
            guard let self else { return }
            Task { await self.netcheckChanged(result) }
        }
        let magic = self.magic
        magicTask = Task { await magic.run() }
        #if os(Linux)
        if options.makeTUN == nil {
            let responder = TSMPResponder(sources: [IPPrefix("100.64.0.0/10")!, IPPrefix("fd7a:115c:a1e0::/48")!])
            do {
                try responder.start()
                tsmpResponder = responder
            } catch {
                logger.warning("TSMP pings will not be answered: \(error)")
            }
        }
        #endif
        if let path = options.socketPath {
            localAPI = try await LocalAPIServer.start(backend: self, socketPath: path)
            logger.info("LocalAPI on \(path)")
        }
        if persisted.prefs.wantRunning && persisted.registered && !persisted.prefs.loginServer.isEmpty {
            startControl(authKey: nil)
        }
    }

    /// Stops everything and removes what the node added to the system (routes, addresses; the TUN
    /// device goes with its file descriptor).
    public func shutdown() async {
        guard !stopped else { return }
        stopped = true
        stopControl()
        magicTask?.cancel()
        #if os(Linux)
        tsmpResponder?.stop()
        #endif
        await localAPI?.close()
        await stopDNS()
        await stopPeerAPI()
        router.reset()
        device.stop()
        device.waitUntilStopped()
        magic.shutdown()
        for (_, waiter) in stateWaiters { waiter.resume() }
        stateWaiters = [:]
    }

    // MARK: Control

    func startControl(authKey: String?) {
        stopControl()
        controlGeneration += 1
        let generation = controlGeneration
        let hostinfo = currentHostinfo()
        var configuration = ControlClientConfiguration(
            serverURL: persisted.prefs.loginServer, machineKey: persisted.machineKey, nodeKey: persisted.nodeKey,
            oldNodeKey: persisted.oldNodeKey, discoKey: discoKey.publicKey, authKey: authKey, hostinfo: hostinfo,
            tls: options.controlTLS)
        configuration.socketMark = socketMark
        let client = ControlClientService(configuration: configuration, logger: logger)
        control = client
        let endpoints = magic.endpoints
        let types = magic.endpointTypes
        controlTasks = [
            Task { await client.run() },
            Task { [weak self] in
                for await event in client.events {
                    guard let self else { return }
                    await self.handle(event, generation: generation)
                }
            },
            Task { await client.updateEndpoints(endpoints, types: types) },
        ]
    }

    func stopControl() {
        for t in controlTasks { t.cancel() }
        controlTasks = []
        control = nil
    }

    func handle(_ event: ControlEvent, generation: Int) async {
        guard generation == controlGeneration, !stopped else { return }
        switch event {
        case .needsLogin(let url):
            if let url { logger.info("To authenticate, visit: \(url)") }
            setLogin(.needsLogin(authURL: url))
        case .needsMachineAuth:
            logger.info("waiting for the administrator to approve this device")
            setLogin(.needsMachineAuth)
        case .loggedIn:
            if !persisted.registered {
                persisted.registered = true
                save()
            }
            setLogin(.loggedIn)
        case .map(let response):
            netmap.apply(response, now: Self.now())
            reconcile()
            if machine.apply(.networkMapReceived) { stateChanged() }
        case .disconnected(let reason):
            logger.info("control: \(reason); reconnecting")
        case .keyExpired:
            logger.warning("node key expired; log in again (warren up)")
            rotateNodeKey()
            stopControl()
            setLogin(.needsLogin(authURL: nil))
        case .loggedOut:
            setLogin(.needsLogin(authURL: nil))
        }
    }

    func setLogin(_ login: BackendStateMachine.Login) {
        if machine.apply(.login(login)) { stateChanged() }
    }

    func endpointsChanged(_ endpoints: [AddrPort], _ types: [Int]) async {
        await control?.updateEndpoints(endpoints, types: types)
    }

    func netcheckChanged(_ result: NetcheckResult) async {
        await pushHostinfo()
    }

    /// Hostinfo as it is now: preferences and the last netcheck.
    func currentHostinfo() -> Hostinfo {
        var hostinfo = ControlClientConfiguration.defaultHostinfo()
        if !persisted.prefs.hostname.isEmpty { hostinfo.known.hostname = persisted.prefs.hostname }
        hostinfo.known.shieldsUp = persisted.prefs.shieldsUp ? true : nil
        hostinfo.known.routableIPs = persisted.prefs.advertiseRoutes.isEmpty ? nil : persisted.prefs.advertiseRoutes
        hostinfo.known.services = peerAPIServices
        if let last = magic.lastNetcheck { hostinfo.known.netInfo = Self.netInfo(last, home: magic.homeDERP) }
        return hostinfo
    }

    func pushHostinfo() async {
        guard let control else { return }
        await control.updateHostinfo(currentHostinfo())
    }

    static func netInfo(_ r: NetcheckResult, home: Int) -> NetInfo {
        var info = NetInfo()
        info.mappingVariesByDestIP = r.mappingVariesByDestIP
        info.workingUDP = r.udp
        info.workingIPv6 = r.ipv6
        // The region magicsock made home (netcheck's preference after hysteresis).
        info.preferredDERP = home != 0 ? home : r.preferredDERP
        info.derpLatency = Dictionary(uniqueKeysWithValues: r.regionLatency.map { ("\($0.key)-v4", $0.value.seconds) })
        return info
    }

    func rotateNodeKey() {
        var rng = SystemRandomNumberGenerator()
        persisted.oldNodeKey = persisted.nodeKey.publicKey
        persisted.nodeKey = .generate(using: &rng)
        persisted.registered = false
        save()
        // The data plane takes the new identity at once; peers learn it from control after the login.
        let key = persisted.nodeKey
        try? device.configure { c in c.setPrivateKey(try WireGuardPrivateKey(rawRepresentation: key.rawRepresentation)) }
        magic.setNodeKey(key)
    }

    func save() {
        do {
            try store.save(persisted)
        } catch {
            logger.error("\(error)")
            health.append("\(error)")
        }
    }

    // MARK: Reconciling the engines to the network map

    func reconcile() {
        chooseExitNodeIfAutomatic()
        let prefs = persisted.prefs
        let now = Self.now()
        let hostPrefixes = options.hostPrefixes?() ?? LocalAddresses.currentPrefixes()
        if let derpMap = netmap.derpMap { magic.setDERPMap(derpMap) }
        let wg = netmap.wireGuardConfig(prefs: prefs, now: now)
        let handles = magic.setPeers(wg.peers.map {
            MagicPeer(nodeKey: $0.key, discoKey: $0.discoKey, homeDERP: $0.homeDERP, endpoints: $0.endpoints)
        })
        let wanted = Dictionary(wg.peers.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        let applied = appliedPeers
        device.configure { c in
            for key in applied.keys where wanted[key] == nil {
                if let k = try? WireGuardPublicKey(rawRepresentation: key.rawRepresentation) { c.removePeer(k) }
            }
            for (key, peer) in wanted where applied[key] != peer {
                guard let k = try? WireGuardPublicKey(rawRepresentation: key.rawRepresentation), let handle = handles[key] else { continue }
                if !c.hasPeer(k) { _ = c.addPeer(k) }
                c.setEndpoint(handle, of: k)
                if applied[key]?.allowedIPs != peer.allowedIPs {
                    c.removeAllowedIPs(of: k)
                    for prefix in peer.allowedIPs { c.addAllowedIP(prefix, to: k) }
                }
            }
        }
        appliedPeers = wanted

        var settings = netmap.routerConfig(prefs: prefs, now: now, hostPrefixes: hostPrefixes)
        if !settings.localAddresses.isEmpty { settings.serviceAddresses = dnsInterfaceAddresses }
        if settings != appliedRouter {
            do {
                try router.apply(settings)
                appliedRouter = settings
                health.removeAll { $0.hasPrefix("router:") }
            } catch {
                logger.error("router: \(error)")
                health.removeAll { $0.hasPrefix("router:") }
                health.append("router: \(error)")
            }
        }

        let filter = netmap.filterConfig(prefs: prefs, hostPrefixes: hostPrefixes)
        tun.update(rules: filter.rules, localAddresses: filter.localAddresses, shieldsUp: filter.shieldsUp)
        if !appliedRouter.localAddresses.isEmpty {
            reconcileDNS(prefs: prefs)
            reconcilePeerAPI()
        }
    }

    /// With `--exit-node=auto:any`, keeps the chosen exit node good: picks one when there is none, and
    /// moves when the current one goes offline or stops offering an exit (Tailscale keeps a node chosen
    /// by name even offline; an automatic choice follows the best).
    func chooseExitNodeIfAutomatic() {
        guard persisted.prefs.autoExitNode else { return }
        let latency = regionLatencySeconds
        let current = persisted.prefs.exitNodeID
        let currentNode = current.flatMap { id in netmap.peers.first { $0.stableID == id } }
        if let node = currentNode, node.offersExitNode, node.online != false { return }
        let chosen = netmap.suggestExitNode(current: current, regionLatency: latency)
        guard chosen?.stableID != current else { return }
        logger.info("exit node (auto:any): \(chosen.map { "\($0.shortName) (\($0.stableID))" } ?? "none available")")
        persisted.prefs.exitNodeID = chosen?.stableID
        save()
    }

    /// Latency to each relay region from the last netcheck, in seconds (for choosing an exit node).
    var regionLatencySeconds: [Int: Double] { magic.lastNetcheck?.regionLatency.mapValues(\.seconds) ?? [:] }

    /// Takes everything the map put in place away (down, logout).
    func clearEngines() async {
        await stopDNS()
        await stopPeerAPI()
        let applied = appliedPeers
        device.configure { c in
            for key in applied.keys {
                if let k = try? WireGuardPublicKey(rawRepresentation: key.rawRepresentation) { c.removePeer(k) }
            }
        }
        appliedPeers = [:]
        magic.setPeers([])
        router.reset()
        appliedRouter = RouterSettings()
        tun.update(rules: [], localAddresses: [], shieldsUp: true)
    }

    static func now() -> TailcfgTime { TailcfgTime(date: Date()) }

    // MARK: Waiting for states

    func stateChanged() {
        logger.info("state: \(machine.state.rawValue)")
        for (_, waiter) in stateWaiters { waiter.resume() }
        stateWaiters = [:]
    }

    /// Waits until the next state change (or `timeout`).
    func waitForStateChange(timeout: Duration) async {
        let id = UUID()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            stateWaiters[id] = continuation
            Task {
                try? await Task.sleep(for: timeout)
                self.timeoutWaiter(id)
            }
        }
    }

    func timeoutWaiter(_ id: UUID) {
        stateWaiters.removeValue(forKey: id)?.resume()
    }

    // MARK: For tests and the daemon

    public var backendState: BackendState { machine.state }
    public var currentNetworkMap: NetworkMap { netmap }
    public var nodeKey: NodePublic { persisted.nodeKey.publicKey }
    public nonisolated var magicsock: Magicsock { magic }
    public nonisolated var wireGuardDevice: WireGuardDevice { device }
    public nonisolated var filteringTUN: FilteringTUN { tun }
}

extension Duration {
    var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
