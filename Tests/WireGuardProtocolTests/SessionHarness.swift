import WarrenTestSupport
@testable import WireGuardProtocol

/// A miniature device for one peer, in memory: what the real device does with `PeerSession`'s
/// actions, minus the sockets. Datagrams go to `outbox`; the test moves them with `Network`.
struct TestNode {
    let name: String
    let key: WireGuardPrivateKey
    var session: PeerSession<String>
    var checker: CookieChecker
    var indices = IndexTable<String>()
    var staged: [[UInt8]] = []
    var outbox: [[UInt8]] = []
    var delivered: [[UInt8]] = []
    var initiationTimes: [ContinuousClock.Instant] = []
    var keepalivesSent = 0
    var cookieRepliesSent = 0
    var handshakesCompleted = 0
    var gaveUp = 0
    var underLoad = false
    var rng: SeededGenerator

    init(name: String, key: WireGuardPrivateKey, peer: WireGuardPublicKey, endpoint: String?, seed: UInt64,
         persistentKeepalive: Duration? = nil) {
        self.name = name
        self.key = key
        session = PeerSession(localStatic: key, remoteStatic: peer, endpoint: endpoint,
                              persistentKeepaliveInterval: persistentKeepalive)
        checker = CookieChecker(localPublicKey: key.publicKey)
        rng = SeededGenerator(seed: seed)
    }

    mutating func newIndex() -> UInt32 {
        var r = SeededGenerator(seed: rng.next())
        return indices.allocate(for: name, using: &r)
    }

    mutating func handle(_ actions: [PeerAction], clock: MockClock) {
        for action in actions {
            switch action {
            case .sendHandshakeInitiation(let bytes):
                initiationTimes.append(clock.now)
                outbox.append(bytes)
            case .sendHandshakeResponse(let bytes):
                outbox.append(bytes)
            case .sendKeepalive:
                if staged.isEmpty { staged.append([]) }
                sendStaged(clock: clock)
            case .sendStagedPackets:
                sendStaged(clock: clock)
            case .dropStagedPackets:
                staged = []
                gaveUp += 1
            case .releaseIndex(let i):
                indices.remove(i)
            case .handshakeCompleted:
                handshakesCompleted += 1
            case .clearEndpointSource:
                break
            }
        }
    }

    mutating func send(_ packet: [UInt8], clock: MockClock) {
        staged.append(packet)
        sendStaged(clock: clock)
    }

    mutating func sendStaged(clock: MockClock) {
        guard !staged.isEmpty else { return }
        var idx: [UInt32] = []
        for _ in 0..<3 { idx.append(newIndex()) }
        var used = 0
        let (keypair, actions) = session.keypairForSending(now: clock.now, timestamp: clock.timestamp, using: &rng) {
            used += 1
            return idx[used - 1]
        }
        for i in idx[used...] { indices.remove(i) }
        guard let keypair else {
            handle(actions, clock: clock)
            return
        }
        var data = false
        for packet in staged {
            guard let message = keypair.seal(packet: packet) else { continue }
            if packet.isEmpty { keepalivesSent += 1 } else { data = true }
            outbox.append(message)
        }
        staged = []
        let more = withIndices { s, rng, next in
            s.transportSent(containsData: data, now: clock.now, timestamp: clock.timestamp, using: &rng, newIndex: next)
        }
        handle(more, clock: clock)
    }

    /// Runs a session call that may allocate indices (pre-allocated to avoid overlapping access).
    mutating func withIndices(_ body: (inout PeerSession<String>, inout SeededGenerator, () -> UInt32) throws -> [PeerAction]) rethrows -> [PeerAction] {
        var idx: [UInt32] = []
        for _ in 0..<3 { idx.append(newIndex()) }
        var used = 0
        defer { for i in idx[used...] { indices.remove(i) } }
        return try body(&session, &rng) {
            used += 1
            return idx[used - 1]
        }
    }

    mutating func tick(clock: MockClock) {
        let actions = withIndices { s, rng, next in
            s.tick(now: clock.now, timestamp: clock.timestamp, using: &rng, newIndex: next)
        }
        handle(actions, clock: clock)
    }

    /// The device's receive path for one datagram from `source`.
    mutating func receive(_ datagram: [UInt8], from source: String, clock: MockClock) {
        guard let type = MessageType(datagram: datagram) else { return }
        switch type {
        case .handshakeInitiation, .handshakeResponse:
            switch checker.screen(datagram, source: Array(source.utf8), underLoad: underLoad, now: clock.now, using: &rng) {
            case .drop: return
            case .reply(let reply):
                cookieRepliesSent += 1
                outbox.append(reply.bytes)
                return
            case .process: break
            }
            if type == .handshakeInitiation {
                guard let message = try? HandshakeInitiation(bytes: datagram),
                      let received = NoiseHandshake.readInitiation(message, localStatic: key),
                      received.initiatorStatic == session.remoteStatic
                else { return }
                if let actions = try? withIndices({ s, rng, next in
                    try s.receivedInitiation(received, from: source, now: clock.now, using: &rng, newIndex: next)
                }) {
                    handle(actions, clock: clock)
                }
            } else {
                guard let message = try? HandshakeResponse(bytes: datagram), indices[message.receiverIndex] != nil,
                      let actions = try? session.receivedResponse(message, from: source, now: clock.now)
                else { return }
                handle(actions, clock: clock)
            }
        case .cookieReply:
            guard let reply = try? CookieReply(bytes: datagram), indices[reply.receiverIndex] != nil else { return }
            session.receivedCookieReply(reply, now: clock.now)
        case .transportData:
            guard let header = try? TransportHeader(message: datagram),
                  let keypair = session.keypair(forLocalIndex: header.receiverIndex),
                  let plain = keypair.open(message: datagram, now: clock.now)
            else { return }
            let actions = withIndices { s, rng, next in
                s.transportReceived(with: keypair, containsData: !plain.isEmpty, from: source, now: clock.now,
                                    timestamp: clock.timestamp, using: &rng, newIndex: next)
            }
            if !plain.isEmpty { delivered.append(plain) }
            handle(actions, clock: clock)
        }
    }
}

/// Two nodes and the wire between them.
struct Network {
    var a: TestNode
    var b: TestNode
    var clock = MockClock()
    /// Source address A's datagrams appear to come from (changes when A roams).
    var aAddress = "A"
    var dropToB = false
    var dropToA = false

    init(seed: UInt64, aPersistentKeepalive: Duration? = nil) {
        var rng = SeededGenerator(seed: seed)
        let ka = WireGuardPrivateKey(using: &rng)
        let kb = WireGuardPrivateKey(using: &rng)
        a = TestNode(name: "a", key: ka, peer: kb.publicKey, endpoint: "B", seed: rng.next(),
                     persistentKeepalive: aPersistentKeepalive)
        b = TestNode(name: "b", key: kb, peer: ka.publicKey, endpoint: nil, seed: rng.next())
    }

    /// Delivers everything in flight (and whatever it provokes) until the wire is quiet.
    mutating func flush() {
        var rounds = 0
        while !(a.outbox.isEmpty && b.outbox.isEmpty) && rounds < 100 {
            rounds += 1
            let toB = a.outbox
            a.outbox = []
            if !dropToB { for d in toB { b.receive(d, from: aAddress, clock: clock) } }
            let toA = b.outbox
            b.outbox = []
            if !dropToA { for d in toA { a.receive(d, from: "B", clock: clock) } }
        }
    }

    /// Moves the clock to `time` after start, calling each node's tick at its deadlines on the way.
    mutating func run(until offset: Duration, from start: ContinuousClock.Instant) {
        let end = start + offset
        while true {
            let next = [a.session.nextDeadline, b.session.nextDeadline].compactMap { $0 }.min()
            guard let next, next <= end else { break }
            if next > clock.now { clock.advance(next - clock.now) }
            a.tick(clock: clock)
            b.tick(clock: clock)
            flush()
        }
        if end > clock.now { clock.advance(end - clock.now) }
    }
}
