public import WireGuardUAPI
import WireGuardProtocol

/// The configuration protocol (`wg set`, `wg show`) applied to the device.
extension WireGuardDevice: UAPIHandler {
    public func snapshot() -> DeviceSnapshot {
        let status = self.status()
        return DeviceSnapshot(
            privateKey: status.privateKey, listenPort: status.listenPort, fwmark: status.fwmark,
            peers: status.peers.map { p in
                PeerSnapshot(
                    publicKey: p.publicKey, presharedKey: p.presharedKey,
                    endpoint: p.endpoint.map { UAPIEndpoint(address: $0.address, port: $0.port) },
                    lastHandshakeTimeSec: p.lastHandshakeSeconds, lastHandshakeTimeNsec: p.lastHandshakeNanoseconds,
                    txBytes: p.txBytes, rxBytes: p.rxBytes, persistentKeepaliveInterval: p.persistentKeepaliveInterval,
                    allowedIPs: p.allowedIPs)
            })
    }

    public func apply(_ update: DeviceConfigUpdate) throws(UAPIError) {
        if let port = update.listenPort {
            do {
                try setListenPort(port)
            } catch {
                throw UAPIError(.portInUse, "cannot bind port \(port): \(error)")
            }
        }
        if let mark = update.fwmark {
            do {
                try setFirewallMark(mark)
            } catch {
                throw UAPIError(.portInUse, "cannot set fwmark \(mark): \(error)")
            }
        }
        configure { c in
            if let key = update.privateKey {
                c.setPrivateKey(key.rawRepresentation.allSatisfy { $0 == 0 } ? nil : key)
            }
            if update.replacePeers { c.removeAllPeers() }
            for peer in update.peers {
                let key = peer.publicKey
                if peer.remove {
                    c.removePeer(key)
                    continue
                }
                if !c.hasPeer(key) {
                    if peer.updateOnly { continue }
                    guard c.addPeer(key) else { continue }
                }
                if let psk = peer.presharedKey { c.setPresharedKey(psk, of: key) }
                if let endpoint = peer.endpoint {
                    c.setEndpoint(WireGuardEndpoint(address: endpoint.address, port: endpoint.port), of: key)
                }
                if let seconds = peer.persistentKeepaliveInterval { c.setPersistentKeepalive(seconds, of: key) }
                if peer.replaceAllowedIPs { c.removeAllowedIPs(of: key) }
                for prefix in peer.allowedIPs { c.addAllowedIP(prefix, to: key) }
            }
        }
    }
}
