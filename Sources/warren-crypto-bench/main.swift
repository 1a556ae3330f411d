// Throughput of the AEADs and hashes Warren's data plane and control paths use, per core.
//
//   swift build -c release --product warren-crypto-bench && .build/release/warren-crypto-bench [packet-size]
//
// Each case runs for about a quarter of a second of the measuring thread's CPU time
// (CLOCK_THREAD_CPUTIME_ID, so other load on the machine barely matters), five times; the median
// is printed as MB/s (10^6 bytes of plaintext per CPU-second) and microseconds per packet.
//
// Allocations: when the process exports a C function `unsigned long warren_malloc_count(void)`
// (an LD_PRELOAD library that wraps malloc, calloc, realloc, posix_memalign and aligned_alloc and
// counts the calls), each case also prints the number of allocations per packet over 1000 packets.

import Crypto
import Foundation
import WarrenCrypto
import WarrenFastAEAD

let packetSize = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 1420
guard packetSize >= 0, packetSize <= 1 << 20 else {
    print("usage: warren-crypto-bench [packet-size in bytes, 0...1048576]")
    exit(2)
}

func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Runs `body` (one packet per call) in batches until `seconds` of thread CPU time pass; returns
/// seconds per packet.
func measure(seconds: Double = 0.25, _ body: () -> Void) -> Double {
    for _ in 0..<200 { body() }  // warm up
    var packets = 0
    let start = threadCPUSeconds()
    var now = start
    repeat {
        for _ in 0..<256 { body() }
        packets += 256
        now = threadCPUSeconds()
    } while now - start < seconds
    return (now - start) / Double(packets)
}

typealias MallocCounter = @convention(c) () -> UInt
let mallocCounter: MallocCounter? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "warren_malloc_count")
    .map { unsafeBitCast($0, to: MallocCounter.self) }

func report(_ name: String, _ body: () -> Void) {
    let runs = (0..<5).map { _ in measure(body) }.sorted()
    let perPacket = runs[2]
    let mbps = Double(packetSize) / perPacket / 1e6
    let padded = name.padding(toLength: 46, withPad: " ", startingAt: 0)
    var line = "\(padded) \(String(format: "%8.1f", mbps)) MB/s  \(String(format: "%6.3f", perPacket * 1e6)) µs/packet"
    if let mallocCounter {
        let before = mallocCounter()
        for _ in 0..<1000 { body() }
        line += String(format: "  %6.2f allocations/packet", Double(mallocCounter() - before) / 1000)
    }
    print(line)
}

var rng = SystemRandomNumberGenerator()
let keyBytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
let plaintext = (0..<packetSize).map { _ in UInt8.random(in: 0...255, using: &rng) }
let symmetricKey = SymmetricKey(data: keyBytes)
var counter: UInt64 = 0
var sink: UInt8 = 0

func wireGuardNonce(_ counter: UInt64) -> ChaChaPoly.Nonce {
    var bytes = [UInt8](repeating: 0, count: 12)
    for i in 0..<8 { bytes[4 + i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
    return try! ChaChaPoly.Nonce(data: bytes)
}

print("packet size \(packetSize) bytes, one thread, median of 5 runs")

// swift-crypto's public API, as a data plane would use it: a Nonce per packet, the tag read out,
// and for open a SealedBox built from received bytes.
report("swift-crypto ChaChaPoly.seal") {
    counter &+= 1
    let box = try! ChaChaPoly.seal(plaintext, using: symmetricKey, nonce: wireGuardNonce(counter))
    sink ^= box.tag.first ?? 0
}
let referenceNonce = wireGuardNonce(7)
let referenceBox = try! ChaChaPoly.seal(plaintext, using: symmetricKey, nonce: referenceNonce)
let wireCiphertext = Array(referenceBox.ciphertext)
let wireTag = Array(referenceBox.tag)
report("swift-crypto ChaChaPoly.open") {
    let box = try! ChaChaPoly.SealedBox(nonce: wireGuardNonce(7), ciphertext: wireCiphertext, tag: wireTag)
    let opened = try! ChaChaPoly.open(box, using: symmetricKey)
    sink ^= opened.first ?? 0
}

// WarrenFastAEAD: in place, one reused context.
let fastKey = try! ChaCha20Poly1305Key(keyBytes)
let context = ChaCha20Poly1305Context()
let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: packetSize + 16, alignment: 16)
buffer.copyBytes(from: plaintext)
report("WarrenFastAEAD seal (in place)") {
    counter &+= 1
    fastKey.seal(counter: counter, buffer: buffer, plaintextCount: packetSize, context: context)
}
buffer.copyBytes(from: plaintext)
fastKey.seal(counter: 7, buffer: buffer, plaintextCount: packetSize, context: context)
let sealedCopy = [UInt8](buffer)
let working = UnsafeMutableRawBufferPointer.allocate(byteCount: packetSize + 16, alignment: 16)
report("WarrenFastAEAD open (in place, incl. memcpy)") {
    working.copyBytes(from: sealedCopy)
    if !fastKey.open(counter: 7, buffer: working, ciphertextAndTagCount: packetSize + 16, context: context) {
        fatalError("open failed")
    }
}

// Hashing and the hand-written NaCl and XChaCha constructions (control paths: handshakes, disco, DERP).
report("BLAKE2s-256 (WarrenCrypto)") {
    sink ^= BLAKE2s.hash(data: plaintext)[0]
}
let nonce24 = [UInt8](repeating: 3, count: 24)
report("NaClSecretBox.seal (WarrenCrypto)") {
    sink ^= try! NaClSecretBox.seal(plaintext, key: keyBytes, nonce: nonce24)[0]
}
report("XChaCha20Poly1305.seal (WarrenCrypto)") {
    sink ^= try! XChaCha20Poly1305.seal(plaintext, key: keyBytes, nonce: nonce24)[0]
}
print("(checksum \(sink))")
