// Foundation's JSONDecoder keeps the last of two equal keys without a word, so `{"name":"a","name":"b"}` would be
// read as "b" while a proxy or log reader sees "a". The admin API refuses such bodies: this scan finds the first
// key that appears twice in one object, at any depth. It does not validate the JSON otherwise (the decoder does).

enum JSONDuplicateKeys {
    /// The first repeated key, or nil (also for text that is not JSON: the decoder reports that). Depth is bounded.
    static func first(in bytes: [UInt8], maximumDepth: Int = 64) -> String? {
        var scanner = Scanner(bytes: bytes, maximumDepth: maximumDepth)
        return try? scanner.value(depth: 0) ?? nil
    }

    private struct Malformed: Error {}

    private struct Scanner {
        let bytes: [UInt8]
        let maximumDepth: Int
        var i = 0

        init(bytes: [UInt8], maximumDepth: Int) {
            self.bytes = bytes
            self.maximumDepth = maximumDepth
        }

        mutating func skipSpace() {
            while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        }

        /// Scans one value; returns a duplicate key found inside it.
        mutating func value(depth: Int) throws -> String? {
            guard depth <= maximumDepth else { throw Malformed() }
            skipSpace()
            guard i < bytes.count else { throw Malformed() }
            switch bytes[i] {
            case UInt8(ascii: "{"):
                i += 1
                var keys: Set<String> = []
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return nil }
                while true {
                    skipSpace()
                    let key = try string()
                    if !keys.insert(key).inserted { return key }
                    skipSpace()
                    guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw Malformed() }
                    i += 1
                    if let found = try value(depth: depth + 1) { return found }
                    skipSpace()
                    guard i < bytes.count else { throw Malformed() }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    guard bytes[i] == UInt8(ascii: "}") else { throw Malformed() }
                    i += 1
                    return nil
                }
            case UInt8(ascii: "["):
                i += 1
                skipSpace()
                if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return nil }
                while true {
                    if let found = try value(depth: depth + 1) { return found }
                    skipSpace()
                    guard i < bytes.count else { throw Malformed() }
                    if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                    guard bytes[i] == UInt8(ascii: "]") else { throw Malformed() }
                    i += 1
                    return nil
                }
            case UInt8(ascii: "\""):
                _ = try string()
                return nil
            default:
                // A number, true, false or null: up to the next delimiter.
                while i < bytes.count, ![UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), 0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) {
                    i += 1
                }
                return nil
            }
        }

        /// A string token, with its escapes resolved (so `"a"` and `"\u0061"` are the same key).
        mutating func string() throws -> String {
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw Malformed() }
            let start = i
            i += 1
            var escaped = false
            while i < bytes.count {
                let byte = bytes[i]
                i += 1
                if byte == UInt8(ascii: "\\") {
                    escaped = true
                    i += 1
                } else if byte == UInt8(ascii: "\"") {
                    let token = bytes[start..<i]
                    guard escaped else { return String(decoding: token.dropFirst().dropLast(), as: UTF8.self) }
                    return try JSONDecoderBridge.decodeString(Array(token))
                }
            }
            throw Malformed()
        }
    }
}

import Foundation

enum JSONDecoderBridge {
    static func decodeString(_ token: [UInt8]) throws -> String {
        try JSONDecoder().decode(String.self, from: Data(token))
    }
}
