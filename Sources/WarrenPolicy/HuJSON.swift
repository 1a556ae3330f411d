// HuJSON: JSON with comments (`//` and `/* */`) and trailing commas, the format of
// Tailscale's policy files. The parser keeps the line and column of every value and
// object key so that later checks can point at the text that caused them.

/// A place in the source text: 1-based line and column (columns count characters).
public struct SourcePosition: Hashable, Sendable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// One parsed HuJSON value with where it starts.
public struct HuJSONNode: Sendable, Equatable {
    public indirect enum Value: Sendable, Equatable {
        case null
        case bool(Bool)
        /// The number's text as written (JSON number grammar).
        case number(String)
        case string(String)
        case array([HuJSONNode])
        /// Members in source order; duplicate keys are rejected by the parser.
        case object([Member])
    }

    public struct Member: Sendable, Equatable {
        public var key: String
        public var keyPosition: SourcePosition
        public var value: HuJSONNode
    }

    public var value: Value
    public var position: SourcePosition

    public var string: String? {
        if case .string(let s) = value { return s }
        return nil
    }

    public var array: [HuJSONNode]? {
        if case .array(let a) = value { return a }
        return nil
    }

    public var members: [Member]? {
        if case .object(let m) = value { return m }
        return nil
    }

    public var isNull: Bool { value == .null }

    /// The value as plain JSON text (comments and trailing commas gone).
    public var jsonText: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n): out += n
        case .string(let s): HuJSON.quote(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, m) in members.enumerated() {
                if i > 0 { out += "," }
                HuJSON.quote(m.key, into: &out)
                out += ":"
                m.value.write(to: &out)
            }
            out += "}"
        }
    }
}

public enum HuJSON {
    /// Nesting deeper than this is refused (keeps the recursive parser's stack bounded).
    public static let maximumDepth = 256

    /// Parses a whole HuJSON document. Errors carry the line and column of the fault.
    public static func parse(_ text: String) throws(PolicyError) -> HuJSONNode {
        try parse(Array(text.utf8))
    }

    public static func parse(_ bytes: [UInt8]) throws(PolicyError) -> HuJSONNode {
        var parser = Parser(bytes: bytes)
        try parser.skipSpace()
        let node = try parser.parseValue(depth: 0)
        try parser.skipSpace()
        if parser.index < bytes.count {
            throw parser.error("invalid character \(parser.describeCurrent()) after top-level value")
        }
        return node
    }

    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    struct Parser {
        let bytes: [UInt8]
        var index = 0
        var line = 1
        var column = 1

        init(bytes: [UInt8]) { self.bytes = bytes }

        var position: SourcePosition { SourcePosition(line: line, column: column) }

        func error(_ message: String) -> PolicyError {
            let p = position
            return PolicyError(message, line: p.line, column: p.column)
        }

        func describeCurrent() -> String {
            guard index < bytes.count else { return "end of input" }
            let b = bytes[index]
            if b >= 0x20 && b < 0x7F { return "'\(Character(Unicode.Scalar(b)))'" }
            return "byte 0x" + String(b, radix: 16)
        }

        mutating func advance() {
            // Columns count characters: UTF-8 continuation bytes do not start a column.
            let b = bytes[index]
            if b == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if b & 0xC0 != 0x80 {
                column += 1
            }
            index += 1
        }

        mutating func skipSpace() throws(PolicyError) {
            while index < bytes.count {
                let b = bytes[index]
                if b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D {
                    advance()
                } else if b == UInt8(ascii: "/") && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "/") {
                    while index < bytes.count && bytes[index] != UInt8(ascii: "\n") { advance() }
                } else if b == UInt8(ascii: "/") && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "*") {
                    let start = position
                    advance(); advance()
                    var closed = false
                    while index < bytes.count {
                        if bytes[index] == UInt8(ascii: "*") && index + 1 < bytes.count && bytes[index + 1] == UInt8(ascii: "/") {
                            advance(); advance()
                            closed = true
                            break
                        }
                        advance()
                    }
                    if !closed {
                        throw PolicyError("unterminated block comment", line: start.line, column: start.column)
                    }
                } else if b == UInt8(ascii: "/") {
                    throw error("invalid character '/' (a comment starts with // or /*)")
                } else {
                    return
                }
            }
        }

        mutating func parseValue(depth: Int) throws(PolicyError) -> HuJSONNode {
            guard depth < HuJSON.maximumDepth else { throw error("nesting too deep") }
            guard index < bytes.count else { throw error("unexpected end of input, expected a value") }
            let start = position
            switch bytes[index] {
            case UInt8(ascii: "{"): return try parseObject(depth: depth, start: start)
            case UInt8(ascii: "["): return try parseArray(depth: depth, start: start)
            case UInt8(ascii: "\""): return HuJSONNode(value: .string(try parseString()), position: start)
            case UInt8(ascii: "t"): try literal("true"); return HuJSONNode(value: .bool(true), position: start)
            case UInt8(ascii: "f"): try literal("false"); return HuJSONNode(value: .bool(false), position: start)
            case UInt8(ascii: "n"): try literal("null"); return HuJSONNode(value: .null, position: start)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return HuJSONNode(value: .number(try parseNumber()), position: start)
            default:
                throw error("invalid character \(describeCurrent()) looking for beginning of value")
            }
        }

        mutating func literal(_ word: String) throws(PolicyError) {
            for b in word.utf8 {
                guard index < bytes.count, bytes[index] == b else {
                    throw error("invalid character \(describeCurrent()) in literal \(word)")
                }
                advance()
            }
        }

        mutating func parseNumber() throws(PolicyError) -> String {
            let begin = index
            if bytes[index] == UInt8(ascii: "-") { advance() }
            func isDigit(_ i: Int) -> Bool { i < bytes.count && bytes[i] >= 0x30 && bytes[i] <= 0x39 }
            guard isDigit(index) else { throw error("invalid character \(describeCurrent()) in numeric literal") }
            if bytes[index] == UInt8(ascii: "0") {
                advance()
            } else {
                while isDigit(index) { advance() }
            }
            if index < bytes.count && bytes[index] == UInt8(ascii: ".") {
                advance()
                guard isDigit(index) else { throw error("invalid character \(describeCurrent()) after decimal point in numeric literal") }
                while isDigit(index) { advance() }
            }
            if index < bytes.count && (bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E")) {
                advance()
                if index < bytes.count && (bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-")) { advance() }
                guard isDigit(index) else { throw error("invalid character \(describeCurrent()) in exponent of numeric literal") }
                while isDigit(index) { advance() }
            }
            return String(decoding: bytes[begin..<index], as: UTF8.self)
        }

        mutating func parseHex4() throws(PolicyError) -> UInt32 {
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard index < bytes.count else { throw error("unexpected end of input in \\u escape") }
                let b = bytes[index]
                let d: UInt32
                switch b {
                case 0x30...0x39: d = UInt32(b - 0x30)
                case 0x61...0x66: d = UInt32(b - 0x61 + 10)
                case 0x41...0x46: d = UInt32(b - 0x41 + 10)
                default: throw error("invalid character \(describeCurrent()) in \\u hexadecimal character escape")
                }
                v = v << 4 | d
                advance()
            }
            return v
        }

        mutating func parseString() throws(PolicyError) -> String {
            advance() // opening quote
            var out: [UInt8] = []
            while true {
                guard index < bytes.count else { throw error("unexpected end of input in string literal") }
                let b = bytes[index]
                if b == UInt8(ascii: "\"") {
                    advance()
                    break
                }
                if b < 0x20 { throw error("invalid control character in string literal") }
                if b == UInt8(ascii: "\\") {
                    advance()
                    guard index < bytes.count else { throw error("unexpected end of input in string escape") }
                    let e = bytes[index]
                    advance()
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var code = try parseHex4()
                        if code >= 0xD800 && code < 0xDC00,
                           index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") {
                            let save = (index, line, column)
                            advance(); advance()
                            let low = try parseHex4()
                            if low >= 0xDC00 && low < 0xE000 {
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                (index, line, column) = save
                            }
                        }
                        let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                        out.append(contentsOf: Array(String(Character(scalar)).utf8))
                    default:
                        throw PolicyError("invalid escape character in string literal", line: line, column: column - 1)
                    }
                    continue
                }
                out.append(b)
                advance()
            }
            guard let s = String(validating: out, as: UTF8.self) else {
                throw error("invalid UTF-8 in string literal")
            }
            return s
        }

        mutating func parseArray(depth: Int, start: SourcePosition) throws(PolicyError) -> HuJSONNode {
            advance() // [
            var items: [HuJSONNode] = []
            while true {
                try skipSpace()
                guard index < bytes.count else { throw error("unexpected end of input in array") }
                if bytes[index] == UInt8(ascii: "]") {
                    advance()
                    return HuJSONNode(value: .array(items), position: start)
                }
                items.append(try parseValue(depth: depth + 1))
                try skipSpace()
                guard index < bytes.count else { throw error("unexpected end of input in array") }
                if bytes[index] == UInt8(ascii: ",") {
                    advance()
                } else if bytes[index] != UInt8(ascii: "]") {
                    throw error("invalid character \(describeCurrent()) after array element")
                }
            }
        }

        mutating func parseObject(depth: Int, start: SourcePosition) throws(PolicyError) -> HuJSONNode {
            advance() // {
            var members: [HuJSONNode.Member] = []
            var seen = Set<String>()
            while true {
                try skipSpace()
                guard index < bytes.count else { throw error("unexpected end of input in object") }
                if bytes[index] == UInt8(ascii: "}") {
                    advance()
                    return HuJSONNode(value: .object(members), position: start)
                }
                guard bytes[index] == UInt8(ascii: "\"") else {
                    throw error("invalid character \(describeCurrent()) looking for beginning of object key string")
                }
                let keyPosition = position
                let key = try parseString()
                if !seen.insert(key).inserted {
                    throw PolicyError("duplicate name \"\(key)\" in object", line: keyPosition.line, column: keyPosition.column)
                }
                try skipSpace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else {
                    throw error("invalid character \(describeCurrent()) after object key")
                }
                advance()
                try skipSpace()
                let value = try parseValue(depth: depth + 1)
                members.append(HuJSONNode.Member(key: key, keyPosition: keyPosition, value: value))
                try skipSpace()
                guard index < bytes.count else { throw error("unexpected end of input in object") }
                if bytes[index] == UInt8(ascii: ",") {
                    advance()
                } else if bytes[index] != UInt8(ascii: "}") {
                    throw error("invalid character \(describeCurrent()) after object key:value pair")
                }
            }
        }
    }
}
