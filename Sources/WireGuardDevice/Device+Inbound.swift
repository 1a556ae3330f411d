import Foundation
import WarrenPacket
import WireGuardProtocol

extension WireGuardDevice {
    /// UDP -> decrypt -> TUN, one batch at a time, on one inbound thread per socket.
    func inboundLoop(receiver: Int) {
        let buffers = PacketBuffers(capacity: WireGuardDeviceConstants.batchSize, slotSize: WireGuardDeviceConstants.slotSize)
        var keypairs = [Keypair?](repeating: nil, count: buffers.capacity)
        var peers = [Peer?](repeating: nil, count: buffers.capacity)
        var counters = [UInt64](repeating: 0, count: buffers.capacity)
        var handshakeSlots: [Int] = []
        handshakeSlots.reserveCapacity(buffers.capacity)
        var confirmed: [Peer] = []
        confirmed.reserveCapacity(8)
        var rekeys: [Peer] = []
        let header = TransportHeader.size

        while true {
            let count: Int
            do {
                count = try bind.receive(receiver, into: buffers)
            } catch DeviceIOError.closed {
                return
            } catch {
                logger.error("Failed to receive packets: \(error)")
                return
            }
            let now = ContinuousClock.now

            // 1. Classify; find the keypair of each data message.
            state.withLock { s in
                for i in 0..<count {
                    keypairs[i] = nil
                    peers[i] = nil
                    let length = buffers.lengths[i]
                    guard length >= 4 else {
                        buffers.lengths[i] = 0
                        continue
                    }
                    let p = buffers.slot(i)
                    let type = UInt32(littleEndian: p.loadUnaligned(as: UInt32.self))
                    if type == MessageType.transportData.rawValue, length >= TransportHeader.minimumMessageSize {
                        let index = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
                        guard let entry = s.indices[index], let keypair = entry.keypair, keypair.canReceive(now: now) else {
                            buffers.lengths[i] = 0
                            continue
                        }
                        keypairs[i] = keypair
                        peers[i] = entry.peer
                        counters[i] = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                    } else if (type == MessageType.handshakeInitiation.rawValue && length == HandshakeInitiation.size)
                        || (type == MessageType.handshakeResponse.rawValue && length == HandshakeResponse.size)
                        || (type == MessageType.cookieReply.rawValue && length == CookieReply.size)
                    {
                        handshakeSlots.append(i)
                        buffers.lengths[i] = 0 - length  // parked: negative = handshake message of that length
                    } else {
                        buffers.lengths[i] = 0
                    }
                }
            }

            // 2. Decrypt in place, no lock held.
            for i in 0..<count {
                guard let keypair = keypairs[i] else { continue }
                let payload = UnsafeMutableRawBufferPointer(
                    start: buffers.slot(i) + header, count: buffers.lengths[i] - header)
                guard let plain = keypair.openInPlace(payload, counter: counters[i]) else {
                    keypairs[i] = nil
                    buffers.lengths[i] = 0
                    continue
                }
                buffers.offsets[i] = header
                buffers.lengths[i] = plain
            }

            // 3. Replay window, session confirmation, roaming, inner source check, statistics.
            state.withLock { s in
                for i in 0..<count {
                    guard let keypair = keypairs[i], let peer = peers[i] else { continue }
                    keypairs[i] = nil
                    peers[i] = nil
                    guard keypair.acceptCounter(counters[i]) else {
                        buffers.lengths[i] = 0
                        continue
                    }
                    if peer.next === keypair {
                        s.release(peer.previous)
                        peer.previous = peer.current
                        peer.current = keypair
                        peer.next = nil
                        peer.timers.handshakeComplete()
                        if !confirmed.contains(where: { $0 === peer }) { confirmed.append(peer) }
                    }
                    peer.endpoint = buffers.endpoints[i]
                    let length = buffers.lengths[i]
                    peer.rxBytes &+= UInt64(length + TransportHeader.minimumMessageSize)
                    peer.timers.anyAuthenticatedPacketReceived()
                    peer.timers.anyAuthenticatedPacketTraversal(now: now)
                    if keypair.isInitiator, peer.current === keypair,
                       now - keypair.createdAt >= WireGuardConstants.rejectAfterTime - WireGuardConstants.keepaliveTimeout
                        - WireGuardConstants.rekeyTimeout,
                       !rekeys.contains(where: { $0 === peer })
                    {
                        rekeys.append(peer)
                    }
                    if length == 0 {
                        continue  // keepalive
                    }
                    let p = buffers.slot(i) + header
                    guard let source = IPHeader.source(p, length: length), s.allowedIPs.lookup(source) === peer,
                          let stated = IPHeader.statedLength(p, length: length), stated <= length
                    else {
                        buffers.lengths[i] = 0
                        continue
                    }
                    buffers.lengths[i] = stated
                    peer.timers.dataReceived(now: now)
                }
            }

            // 4. Deliver the packets; then the rarer work.
            do {
                try tun.writePackets(buffers, count: count)
            } catch DeviceIOError.interfaceRemoved {
                stop(reason: .interfaceRemoved)
                return
            } catch {
                logger.error("Failed to write packets to TUN device: \(error)")
            }
            for i in handshakeSlots {
                let length = 0 - buffers.lengths[i]
                buffers.lengths[i] = 0
                let bytes = Array(UnsafeRawBufferPointer(start: buffers.slot(i), count: length))
                handleHandshakeMessage(bytes, from: buffers.endpoints[i], batchHandshakes: handshakeSlots.count)
            }
            handshakeSlots.removeAll(keepingCapacity: true)
            for peer in confirmed { flushStaged(peer, keepaliveIfEmpty: false) }
            confirmed.removeAll(keepingCapacity: true)
            for peer in rekeys { initiateHandshake(peer, retransmit: false) }
            rekeys.removeAll(keepingCapacity: true)
        }
    }

    /// Handles a handshake initiation, response or cookie reply (already checked for type and size).
    func handleHandshakeMessage(_ bytes: [UInt8], from source: WireGuardEndpoint, batchHandshakes: Int) {
        let now = ContinuousClock.now
        let type = bytes[0]
        if type == UInt8(MessageType.cookieReply.rawValue) {
            guard let reply = try? CookieReply(bytes: bytes) else { return }
            state.withLock { s in
                guard let entry = s.indices[reply.receiverIndex] else { return }
                if entry.peer.cookies.consume(reply, now: now) {
                    logger.verbose("peer(\(entry.peer.publicKey.base64.prefix(4))…) - Received cookie reply")
                }
            }
            return
        }

        enum Outcome {
            case none
            case reply([UInt8], WireGuardEndpoint)
            case respond([UInt8], WireGuardEndpoint, Peer)
            case completed(Peer)
        }
        let outcome: Outcome = state.withLock { s in
            guard var checker = s.cookieChecker, let privateKey = s.privateKey, checker.checkMAC1(bytes) else {
                return .none
            }
            var underLoad = s.countHandshakeMessage(now: now)
            if batchHandshakes >= WireGuardDeviceConstants.batchSize / 4 { underLoad = true }
            if underLoad {
                let sourceBytes = CookieChecker.sourceBytes(address: source.address, port: source.port)
                if !checker.checkMAC2(bytes, source: sourceBytes, now: now) {
                    var rng = SystemRandomNumberGenerator()
                    let reply = checker.makeReply(to: bytes, source: sourceBytes, now: now, using: &rng)
                    s.cookieChecker = checker
                    return reply.map { .reply($0.bytes, source) } ?? .none
                }
            }

            if type == UInt8(MessageType.handshakeInitiation.rawValue) {
                guard let message = try? HandshakeInitiation(bytes: bytes),
                      let received = NoiseHandshake.readInitiation(message, localStatic: privateKey),
                      let peer = s.peers[received.initiatorStatic], var handshake = peer.handshake
                else { return .none }
                do {
                    try handshake.consumeInitiation(received, now: now)
                } catch {
                    logger.verbose("peer(\(peer.publicKey.base64.prefix(4))…) - Refused handshake initiation: \(error)")
                    return .none
                }
                s.releaseHandshakeIndex(of: peer)
                let index = s.reserveIndex(for: peer)
                var rng = SystemRandomNumberGenerator()
                guard let response = try? handshake.createResponse(senderIndex: index, using: &rng),
                      let keypair = try? handshake.deriveKeypair(now: now, cipher: cipher)
                else {
                    s.indices[index] = nil
                    peer.handshake = handshake
                    return .none
                }
                peer.handshake = handshake
                s.release(peer.next)
                peer.next = keypair
                s.indices[index] = DeviceState.IndexEntry(peer: peer, keypair: keypair)
                peer.endpoint = source
                peer.lastHandshake = Self.wallClock()
                peer.timers.anyAuthenticatedPacketReceived()
                peer.timers.anyAuthenticatedPacketTraversal(now: now)
                peer.timers.sessionDerived(now: now)
                var out = response.bytes
                peer.cookies.addMACs(to: &out, now: now)
                peer.txBytes &+= UInt64(out.count)
                peer.timers.anyAuthenticatedPacketSent()
                return .respond(out, source, peer)
            }

            // A handshake response to one of our initiations.
            guard let message = try? HandshakeResponse(bytes: bytes),
                  let entry = s.indices[message.receiverIndex], entry.keypair == nil,
                  var handshake = entry.peer.handshake
            else { return .none }
            let peer = entry.peer
            do {
                try handshake.consumeResponse(message)
            } catch {
                logger.verbose("peer(\(peer.publicKey.base64.prefix(4))…) - Refused handshake response: \(error)")
                return .none
            }
            guard let keypair = try? handshake.deriveKeypair(now: now, cipher: cipher) else {
                peer.handshake = handshake
                return .none
            }
            peer.handshake = handshake
            s.release(peer.next)
            peer.next = nil
            s.release(peer.previous)
            peer.previous = peer.current
            peer.current = keypair
            s.indices[keypair.localIndex] = DeviceState.IndexEntry(peer: peer, keypair: keypair)
            peer.endpoint = source
            peer.lastHandshake = Self.wallClock()
            peer.timers.handshakeComplete()
            peer.timers.sessionDerived(now: now)
            peer.timers.anyAuthenticatedPacketReceived()
            peer.timers.anyAuthenticatedPacketTraversal(now: now)
            return .completed(peer)
        }

        switch outcome {
        case .none:
            break
        case .reply(let bytes, let endpoint):
            logger.verbose("Sending cookie reply to \(endpoint) (under load)")
            send(bytes, to: endpoint)
        case .respond(let bytes, let endpoint, let peer):
            logger.verbose("peer(\(peer.publicKey.base64.prefix(4))…) - Received handshake initiation, sending response")
            send(bytes, to: endpoint)
        case .completed(let peer):
            logger.verbose("peer(\(peer.publicKey.base64.prefix(4))…) - Received handshake response")
            flushStaged(peer, keepaliveIfEmpty: true)
        }
    }
}
