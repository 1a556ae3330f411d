import Foundation
import WireGuardProtocol

extension WireGuardDevice {
    /// The timer thread: sleeps until the earliest peer deadline (at most a second; every timer
    /// is armed at least a second ahead, so none is missed), then acts on what expired.
    func timerLoop() {
        while !isStopped {
            let now = ContinuousClock.now
            var due: [(Peer, PeerTimers.Actions)] = []
            var next = now + .seconds(1)
            state.withLock { s in
                for key in s.peerOrder {
                    guard let peer = s.peers[key] else { continue }
                    let actions = peer.timers.expired(now: now)
                    if !actions.isEmpty { due.append((peer, actions)) }
                    if actions.contains(.zeroKeys) {
                        s.clearSessions(of: peer)
                    }
                    if actions.contains(.giveUpHandshake) {
                        peer.staged = []
                        s.releaseHandshakeIndex(of: peer)
                        peer.handshake?.clear()
                    }
                    if let deadline = peer.timers.nextDeadline, deadline < next { next = deadline }
                }
            }
            for (peer, actions) in due {
                if actions.contains(.giveUpHandshake) {
                    logger.verbose("peer(\(peer.publicKey.base64.prefix(4))…) - Handshake did not complete after \(PeerTimers.maximumHandshakeAttempts + 2) attempts, giving up")
                }
                if actions.contains(.retransmitHandshake) {
                    logger.verbose("peer(\(peer.publicKey.base64.prefix(4))…) - Handshake did not complete after \(WireGuardConstants.rekeyTimeout), retrying")
                    initiateHandshake(peer, retransmit: true)
                }
                if actions.contains(.newHandshake) {
                    logger.verbose("peer(\(peer.publicKey.base64.prefix(4))…) - Retrying handshake because we stopped hearing back")
                    initiateHandshake(peer, retransmit: false)
                }
                if actions.contains(.sendKeepalive) || actions.contains(.persistentKeepalive) {
                    sendKeepalive(peer)
                }
            }
            let wait = ContinuousClock.now.duration(to: next)
            if wait > .zero {
                let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) * 1e-18
                sleepTimers(until: Date(timeIntervalSinceNow: seconds))
            }
        }
    }
}
