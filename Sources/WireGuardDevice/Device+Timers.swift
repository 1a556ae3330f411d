import Foundation
import WireGuardProtocol

extension WireGuardDevice {
    /// The timer thread: sleeps until the earliest deadline of any session (at most a second, so
    /// that deadlines armed meanwhile are seen), ticks the sessions that are due and does what
    /// they ask for. Packet paths wake it when they start a handshake.
    func timerLoop() {
        var effects: [DeviceEffect] = []
        while !isStopped {
            let clock = DeviceClock.read()
            let now = clock.now
            var next = now + .seconds(1)
            state.withLock { s in
                var rng = SystemRandomNumberGenerator()
                for key in s.peerOrder {
                    guard let peer = s.peers[key], let deadline = peer.session?.nextDeadline else { continue }
                    if deadline <= now {
                        s.drive(peer, clock: clock, into: &effects) { session, newIndex in
                            session.tick(now: now, timestamp: clock.timestamp, using: &rng, newIndex: newIndex)
                        }
                    }
                    if let d = peer.session?.nextDeadline, d < next { next = d }
                }
            }
            if !effects.isEmpty {
                perform(effects)
                effects.removeAll(keepingCapacity: true)
            }
            let wait = ContinuousClock.now.duration(to: next)
            if wait > .zero {
                let seconds = Double(wait.components.seconds) + Double(wait.components.attoseconds) * 1e-18
                sleepTimers(until: Date(timeIntervalSinceNow: seconds))
            }
        }
    }
}
