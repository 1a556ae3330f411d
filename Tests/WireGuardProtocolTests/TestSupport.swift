import WarrenTestSupport
@testable import WireGuardProtocol

/// A clock the test moves by hand: no sleeping, no reading the real time after the start.
struct MockClock {
    private(set) var now: ContinuousClock.Instant
    /// Wall time as seen by the peers (for TAI64N), moved together with `now`.
    private(set) var wall: Duration

    init() {
        now = ContinuousClock.now
        wall = .seconds(1_700_000_000)
    }

    mutating func advance(_ d: Duration) {
        now = now + d
        wall += d
    }

    var timestamp: TAI64N { TAI64N(sinceUnixEpoch: wall) }
}

/// Two parties with keys, one handshake each way, ready to run a handshake.
struct Pair {
    var rng: SeededGenerator
    let aKey: WireGuardPrivateKey
    let bKey: WireGuardPrivateKey
    var a: NoiseHandshake
    var b: NoiseHandshake
    var aCookies: CookieGenerator
    var bChecker: CookieChecker

    init(seed: UInt64, psk: Bool = false) {
        rng = SeededGenerator(seed: seed)
        aKey = WireGuardPrivateKey(using: &rng)
        bKey = WireGuardPrivateKey(using: &rng)
        let q = psk ? WireGuardPresharedKey(using: &rng) : .zero
        a = NoiseHandshake(localStatic: aKey, remoteStatic: bKey.publicKey, presharedKey: q)
        b = NoiseHandshake(localStatic: bKey, remoteStatic: aKey.publicKey, presharedKey: q)
        aCookies = CookieGenerator(remotePublicKey: bKey.publicKey)
        bChecker = CookieChecker(localPublicKey: bKey.publicKey)
    }

    /// Runs a full handshake a -> b; returns (a's keypair, b's keypair).
    mutating func handshake(clock: MockClock) throws -> (Keypair, Keypair) {
        let initiation = try a.createInitiation(senderIndex: UInt32.random(in: 1...UInt32.max, using: &rng),
                                                timestamp: clock.timestamp, using: &rng)
        var bytes = initiation.bytes
        aCookies.addMACs(to: &bytes, now: clock.now)
        let parsed = try HandshakeInitiation(bytes: bytes)
        guard let received = NoiseHandshake.readInitiation(parsed, localStatic: bKey) else {
            throw HandshakeError(.decryptionFailed)
        }
        try b.consumeInitiation(received, now: clock.now)
        let response = try b.createResponse(senderIndex: UInt32.random(in: 1...UInt32.max, using: &rng), using: &rng)
        let bPair = try b.deriveKeypair(now: clock.now)
        try a.consumeResponse(try HandshakeResponse(bytes: response.bytes))
        let aPair = try a.deriveKeypair(now: clock.now)
        return (aPair, bPair)
    }
}
