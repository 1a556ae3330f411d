// Node-key expiry reaching connected nodes. A node's key expiry is set at login (the configured
// node_key_expiry; tagged nodes never expire); when the time passes while nodes are connected, the
// watcher tells the engine, which sends the expired node to its peers (with `KeyExpiry` and `Expired`,
// as Tailscale's control does) and ends the node's own map streams.
//
// Each check announces the nodes whose expiry lies in (previous check, now]: a node is announced once
// per expiry time. `check()` is public so tests drive it with the engine's injected clock.

import Foundation
import ServiceLifecycle
import WarrenTailcfg

public actor NodeKeyExpiryWatcher: Service {
    public let engine: ControlEngine
    /// The longest sleep between checks (nodes and their expiries change while it sleeps).
    public let maximumInterval: Duration
    private var lastCheck: TailcfgTime

    public init(engine: ControlEngine, maximumInterval: Duration = .seconds(30)) {
        self.engine = engine
        self.maximumInterval = maximumInterval
        lastCheck = engine.currentTime()
    }

    /// Announces every node whose key expired since the previous check; returns their IDs.
    @discardableResult
    public func check() async -> [Int64] {
        let now = engine.currentTime()
        let since = lastCheck
        lastCheck = now
        let due = await engine.allNodes().filter { node in
            guard let expiry = node.keyExpiry, !expiry.isGoZero else { return false }
            return since < expiry && expiry <= now
        }
        for node in due { await engine.announceExpiry(of: node.id) }
        return due.map(\.id)
    }

    /// How long until the next key expiry (at most `maximumInterval`, at least 50 ms).
    func nextWait() async -> Duration {
        let now = engine.currentTime()
        var wait = maximumInterval
        for node in await engine.allNodes() {
            guard let expiry = node.keyExpiry, !expiry.isGoZero, now < expiry else { continue }
            let seconds = Double(expiry.secondsSince1970 - now.secondsSince1970)
                + Double(Int64(expiry.nanoseconds) - Int64(now.nanoseconds)) / 1e9
            let until = Duration.milliseconds(Int64(min(seconds, 86_400) * 1000) + 1)
            if until < wait { wait = until }
        }
        return max(wait, .milliseconds(50))
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let wait = await self.nextWait()
                do { try await Task.sleep(for: wait) } catch { return }
                await self.check()
            }
        }
    }
}
