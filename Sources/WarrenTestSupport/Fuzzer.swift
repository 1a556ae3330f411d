// Bounded, seeded mutation fuzzing for decoders of untrusted bytes, run inside XCTest
// so that CI runs it on every submission. Each run is reproducible from its seed.

/// SplitMix64: a small, fast, seedable generator (not for cryptography).
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func bytes(count: Int) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) }
    }
}

/// Feeds `body` with inputs derived from `seeds` by random mutations: bit flips, byte
/// overwrites with interesting values, truncation, extension, insertion, deletion,
/// splicing two seeds, and wholly random buffers. `body` must not crash or hang; it is
/// free to throw or return nil for bad input (those are ignored here).
public struct MutationFuzzer {
    public var seeds: [[UInt8]]
    public var iterations: Int
    public var maximumLength: Int
    public var seed: UInt64

    public init(seeds: [[UInt8]], iterations: Int = 20_000, maximumLength: Int = 4096, seed: UInt64 = 0x5EED) {
        self.seeds = seeds.isEmpty ? [[]] : seeds
        self.iterations = iterations
        self.maximumLength = maximumLength
        self.seed = seed
    }

    private static let interesting: [UInt8] = [0, 1, 2, 3, 4, 0x7F, 0x80, 0xFE, 0xFF, 0x40, 0x45, 0x60, 0x20, 0x0A, 0x3D]

    public func run(_ body: ([UInt8]) throws -> Void) rethrows {
        var rng = SeededGenerator(seed: seed)
        for seedInput in seeds { try body(seedInput) }
        for _ in 0..<iterations {
            var input = seeds.randomElement(using: &rng)!
            let rounds = Int.random(in: 1...4, using: &rng)
            for _ in 0..<rounds {
                mutate(&input, using: &rng)
            }
            if input.count > maximumLength { input.removeLast(input.count - maximumLength) }
            try body(input)
        }
    }

    private func mutate(_ input: inout [UInt8], using rng: inout SeededGenerator) {
        switch Int.random(in: 0..<8, using: &rng) {
        case 0 where !input.isEmpty:
            let i = Int.random(in: 0..<input.count, using: &rng)
            input[i] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
        case 1 where !input.isEmpty:
            let i = Int.random(in: 0..<input.count, using: &rng)
            input[i] = Self.interesting.randomElement(using: &rng)!
        case 2 where !input.isEmpty:
            input.removeLast(Int.random(in: 1...input.count, using: &rng))
        case 3:
            input += rng.bytes(count: Int.random(in: 1...64, using: &rng))
        case 4:
            let i = Int.random(in: 0...input.count, using: &rng)
            input.insert(contentsOf: rng.bytes(count: Int.random(in: 1...8, using: &rng)), at: i)
        case 5 where !input.isEmpty:
            let i = Int.random(in: 0..<input.count, using: &rng)
            input.removeSubrange(i..<min(input.count, i + Int.random(in: 1...8, using: &rng)))
        case 6:
            let other = seeds.randomElement(using: &rng)!
            let cut = Int.random(in: 0...input.count, using: &rng)
            let from = Int.random(in: 0...other.count, using: &rng)
            input = Array(input[..<cut]) + Array(other[from...])
        default:
            input = rng.bytes(count: Int.random(in: 0...256, using: &rng))
        }
    }
}
