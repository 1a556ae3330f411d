// warren-derp-bench: relay throughput between two in-process DERP clients over loopback TLS.
//
//   warren-derp-bench [--seconds 5] [--size 1280] [--batch 32] [--plain]
//
// Prints packets/s and Gbit/s of packet payload delivered to the receiver, what the relay dropped at the
// receiver's full queue (DERP drops rather than buffering), and the rate the relay took packets in.

import Foundation
import NIOCore
import NIOPosix
import TailscaleKeys
import WarrenDERPClient
import WarrenDERPServer
import WarrenDERPTransport

struct Options {
    var seconds = 5.0
    var size = 1280
    var batch = 32
    var plain = false

    init(_ arguments: [String]) {
        var it = arguments.makeIterator()
        while let argument = it.next() {
            switch argument {
            case "--seconds": seconds = it.next().flatMap(Double.init) ?? seconds
            case "--size": size = it.next().flatMap(Int.init) ?? size
            case "--batch": batch = it.next().flatMap(Int.init) ?? batch
            case "--plain": plain = true
            default:
                print("usage: warren-derp-bench [--seconds S] [--size BYTES] [--batch N] [--plain]")
                exit(2)
            }
        }
        size = min(max(size, 1), 65536)
        batch = max(batch, 1)
    }
}

let options = Options(Array(CommandLine.arguments.dropFirst()))
var generator = SystemRandomNumberGenerator()
let certificate = try DERPCertificate.selfSigned(hostnames: ["127.0.0.1"])
let server = DERPServer(configuration: DERPServerConfiguration(privateKey: NodePrivate.generate(using: &generator)))
let listener = try DERPListener(server: server, host: "127.0.0.1", port: 0,
                                tlsConfiguration: options.plain ? nil : try certificate.serverTLSConfiguration())
let address = try await listener.bind()
let endpoint = DERPClient.Endpoint(host: "127.0.0.1", port: address.port ?? 0, trust: options.plain ? nil : .pinned(certificate.pin))
let sender = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &generator))
let receiver = try await DERPClient.connect(to: endpoint, privateKey: NodePrivate.generate(using: &generator))

let payload = [UInt8](repeating: 0x45, count: options.size)
let duration = Duration.milliseconds(Int64(options.seconds * 1000))
let destination = receiver.publicKey

let receiving = Task { () -> (packets: Int, bytes: Int, elapsed: Duration) in
    var packets = 0
    var bytes = 0
    var first: ContinuousClock.Instant?
    var last = ContinuousClock.now
    for await frame in receiver.frames {
        guard case .recvPacket(_, let packet) = frame else { continue }
        if first == nil { first = ContinuousClock.now }
        packets += 1
        bytes += packet.count
        last = ContinuousClock.now
    }
    return (packets, bytes, first.map { last - $0 } ?? .zero)
}

let start = ContinuousClock.now
var sent = 0
while ContinuousClock.now - start < duration {
    let frames = (0..<options.batch).map { _ in
        DERPClient.sendPacketFrame(payload, to: destination, allocator: sender.channel.allocator)
    }
    try await sender.send(frames: frames)
    sent += options.batch
}
let sendingTime = ContinuousClock.now - start
// Let the last packets arrive, then stop the receiver.
try await Task.sleep(for: .milliseconds(500))
await receiver.close()
let result = await receiving.value
await sender.close()
listener.close()

func durationSeconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
let seconds = durationSeconds(result.elapsed)
let stats = server.statistics
print("DERP relay over loopback \(options.plain ? "plain TCP" : "TLS"), \(options.size)-byte packets, batches of \(options.batch), \(options.seconds) s")
print(String(format: "  sent %d, delivered %d, dropped at queue head %d", sent, result.packets, Int(stats.droppedQueueHead)))
if seconds > 0 {
    print(String(format: "  delivered: %.0f packets/s, %.3f Gbit/s of payload", Double(result.packets) / seconds,
                 Double(result.bytes) * 8 / seconds / 1e9))
}
// What the relay took in and queued (delivered or dropped at a full queue), while the sender sent.
let ingest = Double(stats.packetsReceived) / durationSeconds(sendingTime)
print(String(format: "  relay ingest: %.0f packets/s, %.3f Gbit/s", ingest, ingest * Double(options.size) * 8 / 1e9))
