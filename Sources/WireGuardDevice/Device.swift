import Foundation
import Synchronization
public import WarrenPacket
public import WireGuardProtocol

/// A userspace WireGuard device: moves IP packets between a TUN interface and UDP.
///
/// The protocol (handshake, cookies, keypairs, timers, roaming) is `WireGuardProtocol.PeerSession`,
/// one per peer; cryptokey routing is `WireGuardProtocol.AllowedIPs`. This type only does I/O
/// and threads:
/// - **outbound**: reads a batch from TUN -> allowed-IPs lookup, keypair and counters (under the
///   state lock, once per batch) -> encrypts in place (no lock) -> one sendmmsg.
/// - **inbound** (one per socket): recvmmsg -> keypair lookup (lock, once per batch) -> decrypts in
///   place (no lock) -> replay window, roaming, inner-source check (lock, once per batch) -> TUN.
///   Handshake messages are handled on this thread; under load (many handshake messages per
///   second) they need a valid MAC2, otherwise a cookie reply is sent.
/// - **timers**: sleeps until the next peer deadline (at most a second) and ticks the sessions.
///
/// Nothing is allocated per packet on the data path: each thread owns preallocated `PacketBuffers`,
/// the AEAD works in place with a per-thread OpenSSL context (`FastTransportCipher`), and the state
/// lock is taken twice per batch on the way in and once on the way out. On Linux the batches are
/// also cheap for the kernel: TUN offloads (TSO in, TCP coalescing out, see `LinuxTUNInterface`)
/// and UDP GSO/GRO (see `LinuxBind`).
///
/// Configuration goes through `configure(_:)` (atomic, under the state lock) and `setListenPort(_:)`.
public final class WireGuardDevice: @unchecked Sendable {
    public let tun: any TunnelInterface
    public let bind: any PacketBind
    public let logger: DeviceLogger
    /// The data-path AEAD for new keypairs.
    let cipher: any TransportCipher.Type

    let state = Mutex(DeviceState())
    /// Handshake messages waiting for the handshake thread (bounded: a flood overflows it cheaply).
    let handshakeQueue = PacketQueue<([UInt8], WireGuardEndpoint)>(limit: WireGuardDeviceConstants.handshakeQueueLimit)
    private let lifecycle = Mutex(Lifecycle())
    private let timerWake = NSCondition()
    private let stopSignal = NSCondition()

    public enum StopReason: Equatable, Sendable {
        case requested
        case interfaceRemoved
        case failed(String)
    }

    struct Lifecycle {
        var running = false
        var stopReason: StopReason?
        var outbound: WorkerThread?
        var inbound: [WorkerThread] = []
        var timers: WorkerThread?
        var handshakes: WorkerThread?
        var stopping = false
    }

    /// A device over `tun` and `bind`. Call `start()` to bind the sockets and run the threads.
    public init(tun: any TunnelInterface, bind: any PacketBind, logger: DeviceLogger = .silent,
                cipher: any TransportCipher.Type = FastTransportCipher.self) {
        self.tun = tun
        self.bind = bind
        self.logger = logger
        self.cipher = cipher
        state.withLock { $0.cipher = cipher }
    }

    // MARK: Lifecycle

    /// Binds the sockets (on the configured listen port, 0 = any) and starts the threads.
    public func start() throws {
        try lifecycle.withLock { life in
            guard !life.running else { return }
            let wanted = state.withLock { $0.listenPort }
            let port = try bind.open(port: wanted)
            state.withLock { $0.listenPort = port }
            life.running = true
            life.outbound = WorkerThread(name: "wg-outbound") { [self] in outboundLoop() }
            life.inbound = startInbound()
            life.timers = WorkerThread(name: "wg-timers") { [self] in timerLoop() }
            life.handshakes = WorkerThread(name: "wg-handshakes") { [self] in handshakeLoop() }
        }
        logger.verbose("Device started, listening on port \(listenPort)")
    }

    private func startInbound() -> [WorkerThread] {
        (0..<bind.receiverCount).map { receiver in
            WorkerThread(name: "wg-inbound-\(receiver)") { [self] in inboundLoop(receiver: receiver) }
        }
    }

    /// Stops the threads and closes the sockets; `waitUntilStopped` then returns `reason`.
    /// Safe to call from any thread, also from the device's own threads, and more than once.
    public func stop(reason: StopReason = .requested) {
        let first = lifecycle.withLock { life -> Bool in
            if life.stopReason != nil { return false }
            life.stopReason = reason
            return true
        }
        guard first else { return }
        tun.close()
        handshakeQueue.close()
        bind.close()
        timerWake.lock()
        timerWake.broadcast()
        timerWake.unlock()
        stopSignal.lock()
        stopSignal.broadcast()
        stopSignal.unlock()
    }

    /// Blocks until `stop` was called (by anyone, or by the device when its interface vanished),
    /// joins the threads and returns why it stopped.
    @discardableResult
    public func waitUntilStopped() -> StopReason {
        stopSignal.lock()
        while lifecycle.withLock({ $0.stopReason }) == nil { stopSignal.wait() }
        stopSignal.unlock()
        let threads = lifecycle.withLock { life -> [WorkerThread] in
            let all = [life.outbound, life.timers, life.handshakes].compactMap { $0 } + life.inbound
            life.handshakes = nil
            life.outbound = nil
            life.timers = nil
            life.inbound = []
            life.running = false
            return all
        }
        for t in threads { t.join() }
        return lifecycle.withLock { $0.stopReason } ?? .requested
    }

    /// Whether `stop` has been called.
    public var isStopped: Bool { lifecycle.withLock { $0.stopReason != nil } }

    /// Wakes the timer thread so it re-reads the deadlines (after configuration changes).
    func wakeTimers() {
        timerWake.lock()
        timerWake.broadcast()
        timerWake.unlock()
    }

    /// The timer thread sleeps here until `deadline` or a wake-up.
    func sleepTimers(until deadline: Date) {
        timerWake.lock()
        if !isStopped { _ = timerWake.wait(until: deadline) }
        timerWake.unlock()
    }

    // MARK: Configuration

    /// The bound UDP port (0 before `start`).
    public var listenPort: UInt16 { state.withLock { $0.listenPort } }

    /// Rebinds the sockets to `port` (0: any free port), restarting the receive threads.
    /// Throws when the port cannot be bound (the device then has no sockets until the next try).
    public func setListenPort(_ port: UInt16) throws {
        try lifecycle.withLock { life in
            guard life.running, life.stopReason == nil else {
                state.withLock { $0.listenPort = port }
                return
            }
            if state.withLock({ $0.listenPort }) == port && port != 0 { return }
            bind.close()
            for t in life.inbound { t.join() }
            life.inbound = []
            let bound: UInt16
            do {
                bound = try bind.open(port: port)
            } catch {
                state.withLock { $0.listenPort = 0 }
                throw error
            }
            try? bind.setMark(state.withLock { $0.fwmark })
            state.withLock { $0.listenPort = bound }
            life.inbound = startInbound()
        }
        logger.verbose("UDP bind updated, port \(listenPort)")
    }

    /// Sets SO_MARK on the sockets (0 clears it).
    public func setFirewallMark(_ mark: UInt32) throws {
        try bind.setMark(mark)
        state.withLock { $0.fwmark = mark }
    }

    /// Changes the configuration atomically: the closure runs under the state lock with a
    /// `DeviceConfigurator`; packets see either the old or the new configuration.
    public func configure<R>(_ body: (inout DeviceConfigurator) throws -> R) rethrows -> R {
        let clock = DeviceClock.read()
        let (result, effects) = try state.withLock { s in
            var configurator = DeviceConfigurator(state: s, clock: clock)
            let result = try body(&configurator)
            s = configurator.state
            return (result, configurator.effects)
        }
        perform(effects)
        wakeTimers()
        return result
    }

    /// The device's configuration and statistics.
    public func status() -> DeviceStatus {
        state.withLock { s in
            DeviceStatus(
                privateKey: s.privateKey, listenPort: s.listenPort, fwmark: s.fwmark,
                peers: s.peerOrder.compactMap { key in
                    guard let p = s.peers[key] else { return nil }
                    return PeerStatus(
                        publicKey: p.publicKey, presharedKey: p.presharedKey, endpoint: p.endpoint,
                        lastHandshakeSeconds: p.lastHandshake.seconds, lastHandshakeNanoseconds: p.lastHandshake.nanoseconds,
                        rxBytes: p.rxBytes, txBytes: p.txBytes,
                        persistentKeepaliveInterval: p.persistentKeepalive,
                        allowedIPs: s.allowedIPs.prefixes(of: p))
                })
        }
    }

    // MARK: Helpers shared by the threads

    /// Sends one datagram, logging (not throwing) failures: the protocol recovers from loss.
    /// Returns whether the bind took it.
    @discardableResult
    func send(_ datagram: [UInt8], to endpoint: WireGuardEndpoint) -> Bool {
        do {
            return try datagram.withUnsafeBytes { try bind.send($0, to: endpoint) }
        } catch {
            logger.verbose("Failed to send to \(endpoint): \(error)")
            return false
        }
    }

}

/// What `status()` returns.
public struct DeviceStatus: Sendable {
    public var privateKey: WireGuardPrivateKey?
    public var listenPort: UInt16
    public var fwmark: UInt32
    public var peers: [PeerStatus]
}

/// One peer in `DeviceStatus`.
public struct PeerStatus: Sendable {
    public var publicKey: WireGuardPublicKey
    public var presharedKey: WireGuardPresharedKey
    public var endpoint: WireGuardEndpoint?
    public var lastHandshakeSeconds: Int64
    public var lastHandshakeNanoseconds: Int64
    public var rxBytes: UInt64
    public var txBytes: UInt64
    public var persistentKeepaliveInterval: UInt16
    public var allowedIPs: [IPPrefix]
}
