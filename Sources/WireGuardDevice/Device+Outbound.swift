import Foundation
import WarrenPacket
import WireGuardProtocol

extension WireGuardDevice {
    /// TUN -> encrypt -> UDP, one batch at a time, on the outbound thread.
    func outboundLoop() {
        let headroom = TransportHeader.size
        let buffers = PacketBuffers(capacity: WireGuardDeviceConstants.batchSize, slotSize: WireGuardDeviceConstants.slotSize)
        // Per slot: the keypair and counter chosen under the lock, used for encryption after it.
        var keypairs = [Keypair?](repeating: nil, count: buffers.capacity)
        var counters = [UInt64](repeating: 0, count: buffers.capacity)
        var handshakesWanted: [Peer] = []
        handshakesWanted.reserveCapacity(8)
        let mtu = tun.mtu

        while true {
            let count: Int
            do {
                count = try tun.readPackets(into: buffers, headroom: headroom)
            } catch DeviceIOError.closed {
                return
            } catch DeviceIOError.interfaceRemoved {
                logger.verbose("Interface \(tun.name) removed")
                stop(reason: .interfaceRemoved)
                return
            } catch {
                logger.error("Failed to read packet from TUN device: \(error)")
                stop(reason: .failed("\(error)"))
                return
            }
            let now = ContinuousClock.now

            state.withLock { s in
                for i in 0..<count {
                    keypairs[i] = nil
                    let p = buffers.slot(i) + headroom
                    let length = buffers.lengths[i]
                    guard let destination = IPHeader.destination(p, length: length),
                          let peer = s.allowedIPs.lookup(destination)
                    else {
                        buffers.lengths[i] = 0
                        continue
                    }
                    guard let endpoint = peer.endpoint, let keypair = peer.current, keypair.canSend(now: now),
                          let counter = keypair.nextSendCounter()
                    else {
                        peer.stage(UnsafeRawBufferPointer(start: p, count: length))
                        buffers.lengths[i] = 0
                        if !handshakesWanted.contains(where: { $0 === peer }) { handshakesWanted.append(peer) }
                        continue
                    }
                    keypairs[i] = keypair
                    counters[i] = counter
                    buffers.endpoints[i] = endpoint
                    let size = Keypair.messageSize(forPacketOfSize: length, mtu: mtu)
                    peer.txBytes &+= UInt64(size)
                    peer.timers.dataSent(now: now, jitter: .zero)
                    peer.timers.anyAuthenticatedPacketSent()
                    peer.timers.anyAuthenticatedPacketTraversal(now: now)
                    if keypair.isInitiator
                        && (counter >= WireGuardConstants.rekeyAfterMessages
                            || now - keypair.createdAt >= WireGuardConstants.rekeyAfterTime),
                        !handshakesWanted.contains(where: { $0 === peer })
                    {
                        handshakesWanted.append(peer)
                    }
                }
            }

            for i in 0..<count {
                guard let keypair = keypairs[i] else { continue }
                let slot = UnsafeMutableRawBufferPointer(start: buffers.slot(i), count: buffers.slotSize)
                let total = keypair.sealInPlace(slot, packetCount: buffers.lengths[i], counter: counters[i], mtu: mtu)
                buffers.offsets[i] = 0
                buffers.lengths[i] = total
                keypairs[i] = nil
            }
            do {
                try bind.send(buffers, count: count)
            } catch {
                logger.verbose("Failed to send data packets: \(error)")
            }
            if !handshakesWanted.isEmpty {
                for peer in handshakesWanted { initiateHandshake(peer, retransmit: false) }
                handshakesWanted.removeAll(keepingCapacity: true)
            }
        }
    }

    /// Sends a handshake initiation to `peer` unless one went out less than REKEY_TIMEOUT ago
    /// (a retransmission from the timer ignores that limit).
    func initiateHandshake(_ peer: Peer, retransmit: Bool) {
        let now = ContinuousClock.now
        let wall = Self.wallClock()
        let message: ([UInt8], WireGuardEndpoint)? = state.withLock { s in
            guard var handshake = peer.handshake, s.peers[peer.publicKey] === peer else { return nil }
            if !retransmit, let last = peer.lastInitiationSent, now - last < WireGuardConstants.rekeyTimeout {
                return nil
            }
            guard let endpoint = peer.endpoint else { return nil }
            s.releaseHandshakeIndex(of: peer)
            let index = s.reserveIndex(for: peer)
            let timestamp = TAI64N(sinceUnixEpoch: .seconds(wall.seconds) + .nanoseconds(wall.nanoseconds))
            var rng = SystemRandomNumberGenerator()
            guard let initiation = try? handshake.createInitiation(senderIndex: index, timestamp: timestamp, using: &rng) else {
                s.indices[index] = nil
                return nil
            }
            peer.handshake = handshake
            var bytes = initiation.bytes
            peer.cookies.addMACs(to: &bytes, now: now)
            peer.lastInitiationSent = now
            peer.timers.handshakeInitiated(now: now, jitter: Self.jitter())
            peer.timers.anyAuthenticatedPacketSent()
            peer.timers.anyAuthenticatedPacketTraversal(now: now)
            peer.txBytes &+= UInt64(bytes.count)
            return (bytes, endpoint)
        }
        if let (bytes, endpoint) = message {
            logger.verbose("peer(\(peer.publicKey.base64.prefix(4))…) - Sending handshake initiation")
            send(bytes, to: endpoint)
        }
    }

    /// Sends the packets staged for `peer` with its current session; if none are staged and
    /// `keepaliveIfEmpty`, sends a keepalive instead (to confirm a new session to the responder).
    func flushStaged(_ peer: Peer, keepaliveIfEmpty: Bool) {
        let now = ContinuousClock.now
        let mtu = tun.mtu
        let messages: ([[UInt8]], WireGuardEndpoint)? = state.withLock { s in
            guard let endpoint = peer.endpoint, let keypair = peer.current, keypair.canSend(now: now) else { return nil }
            var packets = peer.staged
            peer.staged = []
            if packets.isEmpty {
                guard keepaliveIfEmpty else { return nil }
                packets = [[]]
            }
            var out: [[UInt8]] = []
            for packet in packets {
                guard let message = keypair.seal(packet: packet, mtu: packet.isEmpty ? 0 : mtu) else { break }
                peer.txBytes &+= UInt64(message.count)
                if !packet.isEmpty { peer.timers.dataSent(now: now, jitter: Self.jitter()) }
                out.append(message)
            }
            peer.timers.anyAuthenticatedPacketSent()
            peer.timers.anyAuthenticatedPacketTraversal(now: now)
            return (out, endpoint)
        }
        guard let (list, endpoint) = messages else { return }
        for message in list { send(message, to: endpoint) }
    }

    /// Sends a keepalive (an empty data message) if the peer has a usable session; otherwise
    /// starts a handshake.
    func sendKeepalive(_ peer: Peer) {
        let hasSession = state.withLock { _ in
            peer.current.map { $0.canSend(now: .now) } ?? false
        }
        if hasSession {
            flushStaged(peer, keepaliveIfEmpty: true)
        } else {
            initiateHandshake(peer, retransmit: false)
        }
    }
}
