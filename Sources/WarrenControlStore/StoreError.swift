/// An error from the store: an extensible code, a message for people, and no secrets in either.
public struct StoreError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        /// The record asked for does not exist.
        public static let notFound = Code("not found")
        /// A uniqueness rule would break (a name, key or address already in use), or a record is still referenced.
        public static let conflict = Code("conflict")
        /// A value is not acceptable (a bad user name, an empty key, a prefix of the wrong family).
        public static let invalid = Code("invalid")
        /// The address pool has no address left that was never handed out.
        public static let exhausted = Code("exhausted")
        /// The database holds something this version cannot read (a newer schema, a malformed value).
        public static let corrupt = Code("corrupt")
        /// The database could not be opened, read or written.
        public static let io = Code("io")
        public var description: String { name }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
