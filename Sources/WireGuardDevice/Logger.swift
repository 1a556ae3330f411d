import Foundation
import Synchronization

/// Log lines to stderr in wireguard-go's shape ("DEBUG: (wg0) 2026/11/24 20:00:00 message").
///
/// The level comes from the `LOG_LEVEL` environment variable as in wireguard-go: `verbose` or
/// `debug` prints everything, `error` only errors, `silent` nothing (the default is `error`).
public struct DeviceLogger: Sendable {
    public enum Level: Int, Sendable, Comparable {
        case silent = 0, error = 1, verbose = 2
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    public var level: Level
    public var prefix: String
    private let sink: @Sendable (String) -> Void

    public init(level: Level, prefix: String, sink: (@Sendable (String) -> Void)? = nil) {
        self.level = level
        self.prefix = prefix
        self.sink = sink ?? { line in
            FileHandle.standardError.write(Data(line.utf8))
        }
    }

    /// The level named by `LOG_LEVEL` (verbose/debug, error, silent); `error` when unset or unknown.
    public static func level(fromEnvironment value: String?) -> Level {
        switch value?.lowercased() {
        case "verbose", "debug": return .verbose
        case "silent": return .silent
        default: return .error
        }
    }

    public static let silent = DeviceLogger(level: .silent, prefix: "", sink: { _ in })

    public func verbose(_ message: @autoclosure () -> String) {
        if level >= .verbose { write("DEBUG", message()) }
    }

    public func error(_ message: @autoclosure () -> String) {
        if level >= .error { write("ERROR", message()) }
    }

    private func write(_ tag: String, _ message: String) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var t = tm()
        var seconds = now.tv_sec
        gmtime_r(&seconds, &t)
        let stamp = String(
            format: "%04d/%02d/%02d %02d:%02d:%02d", Int(t.tm_year) + 1900, Int(t.tm_mon) + 1, Int(t.tm_mday),
            Int(t.tm_hour), Int(t.tm_min), Int(t.tm_sec))
        sink("\(tag): \(prefix)\(stamp) \(message)\n")
    }
}
