import Foundation
import WarrenPacket
import WireGuardProtocol

extension WireGuardDevice {
    /// TUN -> encrypt -> UDP, one batch at a time, on the outbound thread.
    func outboundLoop() {
        let headroom = TransportHeader.size
        let buffers = PacketBuffers(capacity: WireGuardDeviceConstants.batchSize, slotSize: WireGuardDeviceConstants.slotSize)
        // Per slot: the keypair and counter chosen under the lock, used for encryption after it
        // (on this thread and a helper: see `ParallelBatch`).
        let sealing = SealWork(buffers: buffers, mtu: tun.mtu)
        let keypairs = sealing.keypairs
        let counters = sealing.counters
        let parallel = ParallelBatch(name: "wg-encrypt")
        defer { parallel.shutdown() }
        // Per slot: the peer its message goes to, so that only what the bind sent is counted.
        var slotPeers = [Peer?](repeating: nil, count: buffers.capacity)
        // Peers that sent data in this batch, and peers that need a session first.
        var sentTo: [Peer] = []
        sentTo.reserveCapacity(16)
        var waiting: [Peer] = []
        waiting.reserveCapacity(16)
        var effects: [DeviceEffect] = []
        effects.reserveCapacity(16)

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
            let clock = DeviceClock.read()
            let now = clock.now

            state.withLock { s in
                // Consecutive packets mostly go to one peer: look its keypair up once.
                var lastPeer: Peer? = nil
                var lastKeypair: Keypair? = nil
                var lastEndpoint = WireGuardEndpoint(address: .v4(0), port: 0)
                for i in 0..<count {
                    keypairs[i] = nil
                    let length = buffers.lengths[i]
                    let packet = UnsafeRawBufferPointer(start: buffers.slot(i) + headroom, count: length)
                    guard let peer = s.allowedIPs.lookupDestination(packet: packet) else {
                        buffers.lengths[i] = 0
                        continue
                    }
                    if peer !== lastPeer {
                        lastPeer = peer
                        lastKeypair = nil
                        if let endpoint = peer.endpoint, let k = peer.keypairs.current, k.canSend(now: now),
                           peer.staged.isEmpty {
                            lastKeypair = k
                            lastEndpoint = endpoint
                        }
                    }
                    guard let keypair = lastKeypair, let counter = keypair.nextSendCounter() else {
                        peer.stage(packet)
                        buffers.lengths[i] = 0
                        if !waiting.contains(where: { $0 === peer }) { waiting.append(peer) }
                        continue
                    }
                    keypairs[i] = keypair
                    counters[i] = counter
                    buffers.endpoints[i] = lastEndpoint
                    slotPeers[i] = peer
                    if !sentTo.contains(where: { $0 === peer }) { sentTo.append(peer) }
                }
                var rng = SystemRandomNumberGenerator()
                for peer in sentTo {
                    s.drive(peer, clock: clock, into: &effects) { session, newIndex in
                        session.transportSent(containsData: true, now: now, timestamp: clock.timestamp,
                                              using: &rng, newIndex: newIndex)
                    }
                }
                for peer in waiting { effects.append(.flush(peer, keepalive: false)) }
            }
            sentTo.removeAll(keepingCapacity: true)
            waiting.removeAll(keepingCapacity: true)

            parallel.run(sealing, count: count)
            do {
                try bind.send(buffers, count: count)
            } catch {
                logger.verbose("Failed to send data packets: \(error)")
                for i in 0..<count { buffers.lengths[i] = 0 }
            }
            // The bind zeroed the lengths of what it dropped: count the rest, a run of slots of
            // one peer at a time.
            var i = 0
            while i < count {
                guard let peer = slotPeers[i] else {
                    i += 1
                    continue
                }
                var bytes = 0
                while i < count, slotPeers[i] === peer {
                    bytes += buffers.lengths[i]
                    slotPeers[i] = nil
                    i += 1
                }
                if bytes > 0 { peer.countTransmitted(bytes) }
            }
            if !effects.isEmpty {
                perform(effects)
                effects.removeAll(keepingCapacity: true)
            }
        }
    }

    /// Does the I/O that state changes asked for (outside the state lock).
    func perform(_ effects: [DeviceEffect]) {
        guard !effects.isEmpty else { return }
        var handshakes = false
        for effect in effects {
            switch effect {
            case .send(let bytes, let endpoint, let peer):
                handshakes = true
                if send(bytes, to: endpoint) { peer?.countTransmitted(bytes.count) }
            case .flush(let peer, let keepalive):
                flush(peer, keepalive: keepalive)
            }
        }
        // A handshake arms timers (retransmission) that the timer thread must see.
        if handshakes { wakeTimers() }
    }

    /// Sends the packets staged for `peer` with its current keypair; if none are staged and
    /// `keepalive`, sends a keepalive. Without a usable keypair, starts a handshake instead
    /// (at most one per REKEY_TIMEOUT) and keeps the packets staged.
    func flush(_ peer: Peer, keepalive: Bool) {
        let clock = DeviceClock.read()
        let mtu = tun.mtu
        var effects: [DeviceEffect] = []
        var messages: [[UInt8]] = []
        var destination: WireGuardEndpoint?
        var sentBytes = 0
        state.withLock { s in
            var rng = SystemRandomNumberGenerator()
            var keypair: Keypair?
            s.drive(peer, clock: clock, into: &effects) { session, newIndex in
                let (k, actions) = session.keypairForSending(now: clock.now, timestamp: clock.timestamp,
                                                             using: &rng, newIndex: newIndex)
                keypair = k
                return actions
            }
            guard let keypair, let endpoint = peer.endpoint else { return }
            var packets = peer.takeStaged()
            if packets.isEmpty {
                guard keepalive else { return }
                packets = [[]]
            }
            var data = false
            for packet in packets {
                guard let counter = keypair.nextSendCounter() else { break }
                let message = keypair.seal(packet: packet, counter: counter, mtu: packet.isEmpty ? 0 : mtu)
                if !packet.isEmpty { data = true }
                messages.append(message)
            }
            destination = endpoint
            s.drive(peer, clock: clock, into: &effects) { session, newIndex in
                session.transportSent(containsData: data, now: clock.now, timestamp: clock.timestamp,
                                      using: &rng, newIndex: newIndex)
            }
        }
        if let destination {
            for message in messages where send(message, to: destination) { sentBytes += message.count }
            if sentBytes > 0 { peer.countTransmitted(sentBytes) }
        }
        perform(effects)
    }

    /// Starts a new handshake with the peer now (as REKEY_AFTER_TIME would), unless one went out
    /// less than REKEY_TIMEOUT ago.
    public func initiateHandshake(with key: WireGuardPublicKey) {
        let clock = DeviceClock.read()
        var effects: [DeviceEffect] = []
        state.withLock { s in
            guard let peer = s.peers[key] else { return }
            var rng = SystemRandomNumberGenerator()
            s.drive(peer, clock: clock, into: &effects) { session, newIndex in
                session.initiateHandshake(now: clock.now, timestamp: clock.timestamp, using: &rng, newIndex: newIndex)
            }
        }
        perform(effects)
    }
}

/// Encrypts slot i in place with the keypair and counter chosen for it (then forgets the keypair).
final class SealWork: BatchWork, @unchecked Sendable {
    let buffers: PacketBuffers
    let mtu: Int
    let keypairs: UnsafeMutablePointer<Keypair?>
    let counters: UnsafeMutablePointer<UInt64>

    init(buffers: PacketBuffers, mtu: Int) {
        self.buffers = buffers
        self.mtu = mtu
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
        let slot = UnsafeMutableRawBufferPointer(start: buffers.slot(i), count: buffers.slotSize)
        let total = keypair.sealInPlace(slot, packetCount: buffers.lengths[i], counter: counters[i], mtu: mtu)
        buffers.offsets[i] = 0
        buffers.lengths[i] = total
        keypairs[i] = nil
    }
}
