// Replacing the DERP map while streams are open (warren-control's derp.urls/derp.paths refresh): new full maps
// carry it, and every open map stream gets one message with the new DERPMap (which the client applies whole).

import Synchronization
import WarrenTailcfg

/// The DERP map in force, shared by the engine's builder and whoever replaces it.
public final class DERPMapCell: Sendable {
    private let map: Mutex<DERPMap>

    public init(_ map: DERPMap) { self.map = Mutex(map) }

    public var current: DERPMap { map.withLock { $0 } }

    func replace(_ new: DERPMap) { map.withLock { $0 = new } }
}

extension ControlEngine {
    /// Puts `map` in force and sends it to every open map stream (nothing is sent if it is the map in force).
    /// Returns how many streams were sent it.
    @discardableResult
    public func setDERPMap(_ map: DERPMap) -> Int {
        guard builder.derpMap.current != map else { return 0 }
        builder.derpMap.replace(map)
        var message = MapResponse()
        message.derpMap = map
        let shared = SharedMapMessage(message)
        var sent = 0
        for viewerSessions in sessions.values {
            for session in viewerSessions.values {
                session.outbox.yield(shared)
                sent += 1
            }
        }
        statistics.incrementalUpdatesSent += sent
        logger.info("DERP map replaced", metadata: ["regions": "\(map.regions.count)", "streams": "\(sent)"])
        return sent
    }
}
