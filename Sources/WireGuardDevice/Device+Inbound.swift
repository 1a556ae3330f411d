import Foundation
import WarrenPacket
import WireGuardProtocol

extension WireGuardDevice {
    /// UDP -> decrypt -> TUN, one batch at a time, on one inbound thread per socket.
    func inboundLoop(receiver: Int) {
        let buffers = PacketBuffers(capacity: WireGuardDeviceConstants.batchSize, slotSize: WireGuardDeviceConstants.slotSize)
        // Per slot: the keypair, peer and counter of a data message (decrypted on this thread and a
        // helper: see `ParallelBatch`).
        let opening = OpenWork(buffers: buffers)
        let keypairs = opening.keypairs
        let counters = opening.counters
        var peers = [Peer?](repeating: nil, count: buffers.capacity)
        let parallel = ParallelBatch(name: "wg-decrypt-\(receiver)")
        defer { parallel.shutdown() }
        var handshakeSlots: [Int] = []
        handshakeSlots.reserveCapacity(buffers.capacity)
        var effects: [DeviceEffect] = []
        effects.reserveCapacity(16)
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
            let clock = DeviceClock.read()
            let now = clock.now

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
                        guard let peer = s.indices[index], let keypair = peer.keypairs.keypair(forLocalIndex: index),
                              keypair.canReceive(now: now)
                        else {
                            buffers.lengths[i] = 0
                            continue
                        }
                        keypairs[i] = keypair
                        peers[i] = peer
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
            parallel.run(opening, count: count)

            // 3. Replay window, inner source check, statistics; then the session learns of each run
            //    of packets with one keypair (key confirmation, roaming, timers).
            state.withLock { s in
                var rng = SystemRandomNumberGenerator()
                var runKeypair: Keypair? = nil
                var runPeer: Peer? = nil
                var runData = false
                var runSource = WireGuardEndpoint(address: .v4(0), port: 0)
                func endRun() {
                    guard let peer = runPeer, let keypair = runKeypair else { return }
                    let (data, source) = (runData, runSource)
                    s.drive(peer, clock: clock, into: &effects) { session, newIndex in
                        session.transportReceived(with: keypair, containsData: data, from: source, now: now,
                                                  timestamp: clock.timestamp, using: &rng, newIndex: newIndex)
                    }
                    runPeer = nil
                    runKeypair = nil
                    runData = false
                }
                for i in 0..<count {
                    guard let keypair = keypairs[i], let peer = peers[i] else {
                        peers[i] = nil  // did not authenticate
                        continue
                    }
                    keypairs[i] = nil
                    peers[i] = nil
                    guard keypair.acceptCounter(counters[i]) else {
                        buffers.lengths[i] = 0
                        continue
                    }
                    if keypair !== runKeypair {
                        endRun()
                        runKeypair = keypair
                        runPeer = peer
                    }
                    runSource = buffers.endpoints[i]
                    let length = buffers.lengths[i]
                    peer.rxBytes &+= UInt64(length + TransportHeader.minimumMessageSize)
                    if length == 0 { continue }  // keepalive
                    let packet = UnsafeRawBufferPointer(start: buffers.slot(i) + header, count: length)
                    guard s.allowedIPs.lookupSource(packet: packet) === peer,
                          let stated = IPHeader.statedLength(packet.baseAddress!, length: length),
                          stated <= length, stated > 0
                    else {
                        buffers.lengths[i] = 0
                        continue
                    }
                    buffers.lengths[i] = stated
                    runData = true
                }
                endRun()
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
            // Handshake messages go to the handshake thread, so that a flood of them never holds up
            // data (the queue is bounded: beyond it they are dropped here, cheaply).
            for i in handshakeSlots {
                let length = 0 - buffers.lengths[i]
                buffers.lengths[i] = 0
                let bytes = Array(UnsafeRawBufferPointer(start: buffers.slot(i), count: length))
                handshakeQueue.push((bytes, buffers.endpoints[i]))
            }
            handshakeSlots.removeAll(keepingCapacity: true)
            if !effects.isEmpty {
                perform(effects)
                effects.removeAll(keepingCapacity: true)
            }
        }
    }

    /// The handshake thread: takes queued handshake messages in batches and handles them.
    func handshakeLoop() {
        while let batch = handshakeQueue.pop(maximum: 64) {
            let depth = batch.count + handshakeQueue.count
            for (bytes, source) in batch {
                handleHandshakeMessage(bytes, from: source, queued: depth)
            }
        }
    }

    /// Handles a handshake initiation, response or cookie reply (already checked for type and
    /// size). `queued`: how many handshake messages were waiting (many means under load).
    func handleHandshakeMessage(_ bytes: [UInt8], from source: WireGuardEndpoint, queued: Int) {
        let clock = DeviceClock.read()
        let now = clock.now
        let type = UInt32(bytes[0])
        var effects: [DeviceEffect] = []

        if type == MessageType.cookieReply.rawValue {
            guard let reply = try? CookieReply(bytes: bytes) else { return }
            state.withLock { s in
                guard let peer = s.indices[reply.receiverIndex], peer.hasSession else { return }
                if peer.session!.receivedCookieReply(reply, now: now) {
                    logger.verbose("\(peer.logName) - Received cookie reply")
                }
            }
            return
        }

        state.withLock { s in
            guard var checker = s.cookieChecker, let privateKey = s.privateKey else { return }
            var underLoad = s.countHandshakeMessage(now: now)
            if queued >= WireGuardDeviceConstants.underLoadQueueDepth { underLoad = true }
            var rng = SystemRandomNumberGenerator()
            let sourceBytes = CookieChecker.sourceBytes(address: source.address, port: source.port)
            let screening = checker.screen(bytes, source: sourceBytes, underLoad: underLoad, now: now, using: &rng)
            s.cookieChecker = checker
            switch screening {
            case .drop:
                return
            case .reply(let reply):
                logger.verbose("Sending cookie reply to \(source) (under load)")
                effects.append(.send(reply.bytes, source, nil))
                return
            case .process:
                break
            }

            if type == MessageType.handshakeInitiation.rawValue {
                guard let message = try? HandshakeInitiation(bytes: bytes),
                      let received = NoiseHandshake.readInitiation(message, localStatic: privateKey),
                      let peer = s.peers[received.initiatorStatic]
                else { return }
                do {
                    try s.drive(peer, clock: clock, into: &effects) { session, newIndex in
                        try session.receivedInitiation(received, from: source, now: now, using: &rng, newIndex: newIndex)
                    }
                    logger.verbose("\(peer.logName) - Received handshake initiation, sending response")
                } catch {
                    logger.verbose("\(peer.logName) - Refused handshake initiation: \(error)")
                }
                return
            }

            // A handshake response to one of our initiations.
            guard let message = try? HandshakeResponse(bytes: bytes), let peer = s.indices[message.receiverIndex] else {
                return
            }
            do {
                try s.drive(peer, clock: clock, into: &effects) { session, _ in
                    try session.receivedResponse(message, from: source, now: now)
                }
                logger.verbose("\(peer.logName) - Received handshake response")
            } catch {
                logger.verbose("\(peer.logName) - Refused handshake response: \(error)")
            }
        }
        perform(effects)
    }
}

extension Peer {
    /// "peer(AbCd…wXyZ)" as wireguard-go logs peers.
    var logName: String {
        let b = publicKey.base64
        return "peer(\(b.prefix(4))…\(b.dropLast().suffix(4)))"
    }
}

/// Decrypts the data message in slot i in place; on failure drops it (length 0, keypair nil).
final class OpenWork: BatchWork, @unchecked Sendable {
    let buffers: PacketBuffers
    let keypairs: UnsafeMutablePointer<Keypair?>
    let counters: UnsafeMutablePointer<UInt64>

    init(buffers: PacketBuffers) {
        self.buffers = buffers
        keypairs = .allocate(capacity: buffers.capacity)
        keypairs.initialize(repeating: nil, count: buffers.capacity)
        counters = .allocate(capacity: buffers.capacity)
        counters.initialize(repeating: 0, count: buffers.capacity)
    }

    deinit {
        keypairs.deinitialize(count: buffers.capacity)
        keypairs.deallocate()
        counters.deallocate()
    }

    func process(_ i: Int) {
        guard let keypair = keypairs[i] else { return }
        let header = TransportHeader.size
        let payload = UnsafeMutableRawBufferPointer(start: buffers.slot(i) + header, count: buffers.lengths[i] - header)
        guard let plain = keypair.openInPlace(payload, counter: counters[i]) else {
            keypairs[i] = nil
            buffers.lengths[i] = 0
            return
        }
        buffers.offsets[i] = header
        buffers.lengths[i] = plain
    }
}
