// `listeners:` in the YAML file: each listener's connection cap and timers (docs/control-server.md,
// docs/limits.md). Every key is optional; the defaults are safe for the internet.
//
//   listeners:
//     control: {max_connections: 4096, handshake_timeout: 15s, idle_timeout: 90s}
//     derp:    {max_connections: 4096, handshake_timeout: 15s, idle_timeout: 180s}
//     metrics: {max_connections: 64, handshake_timeout: 15s, idle_timeout: 60s}
//     admin:   {max_connections: 64, handshake_timeout: 15s, idle_timeout: 15s}   # the admin socket
//     accept_backoff: 1s

import Foundation
import NIOCore
import WarrenListenerGuard

struct ListenerSettings {
    struct One {
        /// nil: the default; 0: no cap.
        var maximumConnections: Int?
        var handshakeTimeout: Duration?
        var idleTimeout: Duration?
    }

    var control = One()
    var derp = One()
    var metrics = One()
    var admin = One()
    var acceptBackoff: Duration?

    static let handshakeDefault = TimeAmount.seconds(15)
    static let controlIdleDefault = TimeAmount.seconds(90)
    /// Three DERP keep-alive intervals (60 s): a live client is pinged when silent and answers well before.
    static let derpIdleDefault = TimeAmount.seconds(180)
    static let metricsIdleDefault = TimeAmount.seconds(60)
    /// The admin socket serves one request per connection (as `AdminHTTPServer.defaultLimits`).
    static let adminIdleDefault = TimeAmount.seconds(15)

    /// The default cap of the control and DERP listeners: close to half of what the descriptor limit leaves after
    /// a reserve for the database, the other listeners and logs (so the cap, not EMFILE, turns the excess away),
    /// between 64 and 16384.
    static func defaultCap(descriptorLimit: UInt64) -> Int {
        let budget = descriptorLimit > 256 ? Int(min(descriptorLimit, 1 << 20)) - 256 : 64
        return min(16384, max(64, budget * 45 / 100))
    }

    func limits(for listener: KeyPath<ListenerSettings, One>, defaultCap: Int, defaultIdle: TimeAmount) -> ListenerLimits {
        let one = self[keyPath: listener]
        return ListenerLimits(
            maximumConnections: one.maximumConnections ?? defaultCap,
            handshakeTimeout: one.handshakeTimeout.map(Self.timeAmount) ?? Self.handshakeDefault,
            idleTimeout: one.idleTimeout.map(Self.timeAmount) ?? defaultIdle,
            acceptBackoff: acceptBackoff.map(Self.timeAmount) ?? .seconds(1))
    }

    static func timeAmount(_ duration: Duration) -> TimeAmount {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000)
    }

    static func read(_ value: Any?, file: String) throws -> ListenerSettings {
        var out = ListenerSettings()
        guard let value else { return out }
        func fail(_ key: String, _ problem: String) -> ConfigError { ConfigError(file: file, key: key, problem: problem) }
        guard let map = value as? [String: Any] else {
            throw fail("listeners", "expected a mapping with control, derp, metrics, admin and accept_backoff")
        }
        func duration(_ value: Any?, _ key: String, max: Duration) throws -> Duration? {
            guard let value else { return nil }
            let text = value as? String ?? (value as? Int).map { "\($0)s" }
            guard let text, let parsed = ConfigDuration.parse(text) else {
                throw fail(key, "expected a duration such as 500ms, 15s or 3m")
            }
            guard parsed <= max else { throw fail(key, "at most \(max)") }
            return parsed
        }
        for key in map.keys.sorted() {
            let path = "listeners.\(key)"
            if key == "accept_backoff" {
                out.acceptBackoff = try duration(map[key], path, max: .seconds(60))
                continue
            }
            let slot: WritableKeyPath<ListenerSettings, One>
            switch key {
            case "control": slot = \.control
            case "derp": slot = \.derp
            case "metrics": slot = \.metrics
            case "admin": slot = \.admin
            default: throw fail(path, "unknown key (expected control, derp, metrics, admin or accept_backoff)")
            }
            guard let settings = map[key] as? [String: Any] else {
                throw fail(path, "expected a mapping with max_connections, handshake_timeout and idle_timeout")
            }
            var one = One()
            for inner in settings.keys.sorted() {
                let innerPath = "\(path).\(inner)"
                switch inner {
                case "max_connections":
                    guard let n = settings[inner] as? Int, (0...1_000_000).contains(n) else {
                        throw fail(innerPath, "expected a number from 0 (no cap) to 1000000")
                    }
                    one.maximumConnections = n
                case "handshake_timeout":
                    one.handshakeTimeout = try duration(settings[inner], innerPath, max: .seconds(600))
                case "idle_timeout":
                    one.idleTimeout = try duration(settings[inner], innerPath, max: .seconds(86_400))
                default:
                    throw fail(innerPath, "unknown key (expected max_connections, handshake_timeout or idle_timeout)")
                }
            }
            out[keyPath: slot] = one
        }
        return out
    }
}
