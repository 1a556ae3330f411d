// Keeps JSON object members this code does not model, so that a server can pass a client's Hostinfo on
// to peers without dropping fields newer clients added.

/// A struct whose coding keys can be listed.
public protocol KnownJSONFields: Codable, Hashable, Sendable {
    static var knownFieldNames: Set<String> { get }
}

struct DynamicCodingKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// `Known`'s fields, reachable directly (`hostinfo.hostname`), plus every other member of the JSON
/// object in ``unknownFields``, written back out unchanged.
@dynamicMemberLookup
public struct PreservingUnknownFields<Known: KnownJSONFields>: Codable, Hashable, Sendable {
    public var known: Known
    public var unknownFields: [String: JSONValue]

    public init(_ known: Known, unknownFields: [String: JSONValue] = [:]) {
        self.known = known
        self.unknownFields = unknownFields
    }

    public subscript<T>(dynamicMember path: WritableKeyPath<Known, T>) -> T {
        get { known[keyPath: path] }
        set { known[keyPath: path] = newValue }
    }

    public init(from decoder: any Decoder) throws {
        known = try Known(from: decoder)
        let all = try decoder.singleValueContainer().decode([String: JSONValue].self)
        unknownFields = all.filter { !Known.knownFieldNames.contains($0.key) }
    }

    public func encode(to encoder: any Encoder) throws {
        try known.encode(to: encoder)
        var container = encoder.container(keyedBy: DynamicCodingKey.self)
        for (name, value) in unknownFields.sorted(by: { $0.key < $1.key }) where !Known.knownFieldNames.contains(name) {
            try container.encode(value, forKey: DynamicCodingKey(name))
        }
    }
}
