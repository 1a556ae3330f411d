// warren-handshake-bench: WireGuard handshakes per second on one thread, through the whole
// message path of WireGuardProtocol: initiation created with MAC1, screened (MAC1), read and
// consumed by the responder, response created with MAC1, consumed by the initiator, and both
// keypairs derived. Also the steps on their own, and the cheap paths a flood takes (a MAC1 check
// that fails, a cookie reply under load). Run on demand, not a test:
//   swift run -c release warren-handshake-bench [seconds-per-case]

import Foundation
import WireGuardProtocol

let seconds = CommandLine.arguments.dropFirst().first.flatMap(Double.init) ?? 2
guard seconds > 0, seconds <= 600 else {
    print("usage: warren-handshake-bench [seconds-per-case (0 < s <= 600)]")
    exit(2)
}
let budget = Duration.milliseconds(Int64(seconds * 1000))

let clock = ContinuousClock()

/// Protocol time: the responder refuses a second initiation from one peer within 20 ms, and
/// wants strictly newer timestamps, so the protocol clock and the TAI64N label move 21 ms per
/// handshake (independent of the wall time measured below).
struct ProtocolTime {
    var now = ContinuousClock.now
    var wall = Duration.seconds(1_700_000_000)
    mutating func step() {
        now = now + .milliseconds(21)
        wall += .milliseconds(21)
    }
    var timestamp: TAI64N { TAI64N(sinceUnixEpoch: wall) }
}

/// Runs `body` repeatedly for the time budget; returns operations per second.
func measure(_ body: () throws -> Void) rethrows -> Double {
    var count = 0
    let start = clock.now
    var elapsed = Duration.zero
    while elapsed < budget {
        for _ in 0..<16 { try body() }
        count += 16
        elapsed = clock.now - start
    }
    let (s, atto) = elapsed.components
    return Double(count) / (Double(s) + Double(atto) / 1e18)
}

func row(_ name: String, _ perSecond: Double) {
    let padded = name.padding(toLength: 58, withPad: " ", startingAt: 0)
    let figure = String(Int(perSecond.rounded()))
    print(padded + String(repeating: " ", count: max(0, 10 - figure.count)) + figure + " /s")
}

struct BenchError: Error {}

/// Two peers and their MAC state, with the protocol clock.
struct Peers {
    var rng = SystemRandomNumberGenerator()
    let initiatorKey: WireGuardPrivateKey
    let responderKey: WireGuardPrivateKey
    var time = ProtocolTime()
    var initiator: NoiseHandshake
    var responder: NoiseHandshake
    var macsToResponder: CookieGenerator
    var macsToInitiator: CookieGenerator
    var checker: CookieChecker
    let source = CookieChecker.sourceBytes(address: .v4(0xC000_0201), port: 51820)
    var index: UInt32 = 1

    init() {
        initiatorKey = WireGuardPrivateKey(using: &rng)
        responderKey = WireGuardPrivateKey(using: &rng)
        initiator = NoiseHandshake(localStatic: initiatorKey, remoteStatic: responderKey.publicKey)
        responder = NoiseHandshake(localStatic: responderKey, remoteStatic: initiatorKey.publicKey)
        macsToResponder = CookieGenerator(remotePublicKey: responderKey.publicKey)
        macsToInitiator = CookieGenerator(remotePublicKey: initiatorKey.publicKey)
        checker = CookieChecker(localPublicKey: responderKey.publicKey)
    }

    /// A fresh initiation with MAC1, as it goes on the wire.
    mutating func initiation() throws -> [UInt8] {
        time.step()
        index &+= 2
        var bytes = try initiator.createInitiation(senderIndex: index, timestamp: time.timestamp, using: &rng).bytes
        macsToResponder.addMACs(to: &bytes, now: time.now)
        return bytes
    }

    /// One whole handshake; returns both keypairs.
    mutating func handshake() throws -> (Keypair, Keypair) {
        let initiation = try initiation()
        guard case .process = checker.screen(initiation, source: source, underLoad: false, now: time.now, using: &rng),
              let received = NoiseHandshake.readInitiation(try HandshakeInitiation(bytes: initiation),
                                                           localStatic: responderKey)
        else { throw BenchError() }
        try responder.consumeInitiation(received, now: time.now)
        var response = try responder.createResponse(senderIndex: index &+ 1, using: &rng).bytes
        macsToInitiator.addMACs(to: &response, now: time.now)
        let responderKeys = try responder.deriveKeypair(now: time.now)
        try initiator.consumeResponse(HandshakeResponse(bytes: response))
        return (try initiator.deriveKeypair(now: time.now), responderKeys)
    }

    /// Screens a handshake message under load (the flood paths).
    mutating func screenUnderLoad(_ message: [UInt8]) -> HandshakeScreening {
        checker.screen(message, source: source, underLoad: true, now: time.now, using: &rng)
    }
}

print("warren-handshake-bench: one thread, \(seconds) s per case")
var peers = Peers()
do {
    // Check once that the two keypairs talk before timing anything.
    let (i, r) = try peers.handshake()
    guard let m = i.seal(packet: [1, 2, 3]), r.open(message: m, now: peers.time.now) != nil else { throw BenchError() }

    row("full handshake (create, screen, consume, respond, derive)", try measure { _ = try peers.handshake() })
    row("initiation created with MAC1", try measure { _ = try peers.initiation() })

    let sample = try peers.initiation()
    let sampleMessage = try HandshakeInitiation(bytes: sample)
    let responderKey = peers.responderKey
    row("initiation read (responder's static DH and AEAD only)", measure {
        _ = NoiseHandshake.readInitiation(sampleMessage, localStatic: responderKey)
    })
    var forged = sample
    forged[HandshakeInitiation.mac1Offset] ^= 1
    row("flood: initiation with a bad MAC1, dropped", measure { _ = peers.screenUnderLoad(forged) })
    row("flood under load: initiation without MAC2, cookie reply", measure { _ = peers.screenUnderLoad(sample) })
} catch {
    print("handshake failed: \(error)")
    exit(1)
}
