// The PeerAPI: an HTTP server on the node's own tailnet addresses that peers reach through the tunnel
// (Tailscale's ipn/ipnlocal/peerapi.go). Its port is announced in Hostinfo.Services ("peerapi4",
// "peerapi6"). What it serves here: DNS over HTTPS' wire format (RFC 8484) at /dns-query for peers that
// use this node as their exit node, announced as "peerapi-dns-proxy", so that their DNS follows their
// traffic out of this node; queries are answered by this host's own resolvers. Only peers in the map are
// served, and /dns-query only to those the packet filter lets reach the internet through this node.

import Foundation
import NIOCore
import NIOPosix
import WarrenDNS
import WarrenDNSServer
import WarrenLocalAPI
import WarrenNetMap
import WarrenPacket
import WarrenTailcfg

extension WarrenNode {
    /// Largest DNS query accepted at /dns-query.
    static let peerAPIMaximumQuery = 4096

    /// Binds the PeerAPI on the node's tailnet addresses (once they are on the interface), or closes it
    /// when they are gone; announces the port.
    func reconcilePeerAPI() {
        let addresses = (netmap.selfNode?.addresses ?? []).filter(\.isSingleAddress).map(\.address).sorted()
        guard options.router == nil else { return }
        // Bound (or being bound) to these addresses already; a failed bind clears peerAPIAddresses, so the
        // next reconcile tries again.
        if addresses == peerAPIAddresses, !addresses.isEmpty || peerAPIChannels.isEmpty { return }
        guard !peerAPIStarting else { return }
        peerAPIStarting = true
        let old = peerAPIChannels
        peerAPIChannels = []
        peerAPIAddresses = addresses
        Task {
            for channel in old { try? await channel.close() }
            var channels: [any Channel] = []
            var port = 0
            do {
                for address in addresses {
                    let socket = try SocketAddress(ipAddress: "\(address)", port: port)
                    let channel = try await OneRequestHTTPServer.bind(socket, maximumConnections: 32) { [weak self] request in
                        guard let self else { return LocalAPIResponse(status: 503, body: []) }
                        return await self.handlePeerAPI(request)
                    }
                    if port == 0 { port = channel.localAddress?.port ?? 0 }
                    channels.append(channel)
                }
                await self.peerAPIStarted(channels, port: port)
            } catch {
                for channel in channels { try? await channel.close() }
                await self.peerAPIFailed(error)
            }
        }
    }

    func peerAPIStarted(_ channels: [any Channel], port: Int) async {
        peerAPIStarting = false
        guard !stopped, !channels.isEmpty else {
            for channel in channels { try? await channel.close() }
            return
        }
        peerAPIChannels = channels
        let changed = peerAPIPort != UInt16(clamping: port)
        peerAPIPort = UInt16(clamping: port)
        logger.info("PeerAPI on port \(port) of \(peerAPIAddresses.map(\.description).joined(separator: ", "))")
        if changed { await pushHostinfo() }
    }

    func peerAPIFailed(_ error: any Error) {
        peerAPIStarting = false
        peerAPIAddresses = []
        logger.error("PeerAPI: \(error)")
        health.removeAll { $0.hasPrefix("peerapi:") }
        health.append("peerapi: \(error)")
    }

    func stopPeerAPI() async {
        let channels = peerAPIChannels
        peerAPIChannels = []
        peerAPIAddresses = []
        for channel in channels { try? await channel.close() }
    }

    /// The services to announce in Hostinfo.
    var peerAPIServices: [HostService]? {
        guard peerAPIPort != 0 else { return nil }
        var services = [HostService(proto: "peerapi4", port: peerAPIPort), HostService(proto: "peerapi6", port: peerAPIPort)]
        if persisted.prefs.advertisesExitNode { services.append(HostService(proto: "peerapi-dns-proxy", port: 1)) }
        return services
    }

    // MARK: Requests

    func handlePeerAPI(_ request: OneRequest) async -> LocalAPIResponse {
        guard let remote = request.remoteAddress?.ipAddress.flatMap({ IPAddress($0) }) else {
            return Self.text(403, "no peer address")
        }
        let path = request.target.split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        // Only nodes of this tailnet (self included), by their tailnet address.
        guard let peer = netmap.node(address: remote) else { return Self.text(403, "\(remote) is not a node of this tailnet") }
        // A browser's request (Referer or Origin) is refused, as Tailscale's PeerAPI refuses it: a page must
        // not drive a peer's PeerAPI through the visitor's tunnel.
        if request.headers.contains(where: { ["referer", "origin"].contains($0.0.lowercased()) }) {
            return Self.text(403, "invalid peerapi request")
        }
        switch path {
        case "", "/":
            // What `ping --peerapi` asks for (HEAD /): 200 says the PeerAPI is reachable through the tunnel.
            guard request.method == "GET" || request.method == "HEAD" else {
                return LocalAPIResponse(status: 405, headers: [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")], body: Array("method not allowed\n".utf8))
            }
            return Self.text(200, "This is the PeerAPI of Warren node \(netmap.selfNode?.name ?? "")")
        case "/dns-query":
            guard persisted.prefs.advertisesExitNode || peer.id == netmap.selfNode?.id else {
                return Self.text(403, "this node is not an exit node")
            }
            let internet: IPAddress = remote.version == .v4 ? IPAddress("0.0.0.0")! : IPAddress("::")!
            guard peer.id == netmap.selfNode?.id || tun.allows(src: remote, dst: internet, port: 53) else {
                return Self.text(403, "\(remote) may not use this node as exit node")
            }
            return await answerDoH(request)
        default:
            return Self.text(404, "not found")
        }
    }

    /// RFC 8484: the query as `?dns=` (base64url, no padding) with GET, or the body of a POST of
    /// application/dns-message; the answer in the same type, forwarded to this host's resolvers.
    func answerDoH(_ request: OneRequest) async -> LocalAPIResponse {
        let query: [UInt8]
        switch request.method {
        case "GET":
            let parameters = request.target.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
            let value = parameters.split(separator: "&").first { $0.hasPrefix("dns=") }.map { String($0.dropFirst(4)) }
            guard let value, let bytes = Self.base64URLDecode(value) else { return Self.text(400, "missing or bad dns parameter") }
            query = bytes
        case "POST":
            query = request.body
        default:
            return LocalAPIResponse(status: 405, headers: [("Allow", "GET, POST"), ("Content-Type", "text/plain")], body: Array("method not allowed\n".utf8))
        }
        guard query.count >= 12, query.count <= Self.peerAPIMaximumQuery, (try? DNSMessage(bytes: query)) != nil else {
            return Self.text(400, "not a DNS query")
        }
        let upstreams = hostDNS.hostResolvers()
        guard !upstreams.isEmpty else { return Self.text(502, "this node has no resolver to forward to") }
        let client = DNSClient(socketMark: socketMark, timeout: .seconds(3))
        for upstream in upstreams {
            guard let server = try? SocketAddress(ipAddress: "\(upstream)", port: 53) else { continue }
            if var answer = try? await client.exchange(query, with: server, over: .udp) {
                if answer.count >= 3, answer[2] & 0x02 != 0, let full = try? await client.exchange(query, with: server, over: .tcp) {
                    answer = full  // truncated over UDP: the whole answer over TCP (DoH has no size limit)
                }
                return LocalAPIResponse(status: 200, headers: [("Content-Type", "application/dns-message")], body: answer)
            }
        }
        return Self.text(502, "no answer from this node's resolvers")
    }

    static func text(_ status: Int, _ message: String) -> LocalAPIResponse {
        LocalAPIResponse(status: status, headers: [("Content-Type", "text/plain; charset=utf-8")], body: Array((message + "\n").utf8))
    }

    /// base64url without padding (RFC 4648 §5), as DoH's GET uses it.
    static func base64URLDecode(_ text: String) -> [UInt8]? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { [UInt8]($0) }
    }
}

// MARK: ping --peerapi

extension WarrenNode {
    /// HEAD / on the peer's PeerAPI through the tunnel, as Tailscale's `ping --peerapi`: the time to the
    /// status line; anything but 200 is an error.
    func peerAPIPing(_ peer: Node, address: IPAddress, ip: String, nodeIP: String) async -> PingResult {
        let proto = address.version == .v4 ? "peerapi4" : "peerapi6"
        guard let port = peer.hostinfo?.known.services?.first(where: { $0.proto == proto })?.port, port != 0 else {
            return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), err: "no PeerAPI base found for peer \(peer.stableID) (\(ip))")
        }
        let base = address.version == .v4 ? "http://\(address):\(port)" : "http://[\(address)]:\(port)"
        let started = ContinuousClock.now
        do {
            let status = try await Self.headStatus(address: address, port: Int(port), timeout: .seconds(10))
            let latency = (ContinuousClock.now - started).seconds
            guard status.hasPrefix("HTTP/1.") && status.split(separator: " ").dropFirst().first == "200" else {
                return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), err: "HTTP status \(status)", latencySeconds: latency,
                                  peerAPIURL: base)
            }
            return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), latencySeconds: latency, peerAPIPort: port, peerAPIURL: base)
        } catch {
            return PingResult(ip: ip, nodeIP: nodeIP, nodeName: shortName(peer), err: "\(error)", peerAPIURL: base)
        }
    }

    /// The status line of the answer to `HEAD /` at address:port (no socket mark: through the tunnel).
    static func headStatus(address: IPAddress, port: Int, timeout: TimeAmount) async throws -> String {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let promise = loop.makePromise(of: String.self)
        let timer = loop.scheduleTask(in: timeout) { promise.fail(PeerAPIPingError("timeout waiting for the PeerAPI")) }
        let host = address.version == .v4 ? "\(address):\(port)" : "[\(address)]:\(port)"
        let server = try SocketAddress(ipAddress: "\(address)", port: port)
        let connecting = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(StatusLineReader(promise: promise)) }
            }
            .connect(to: server)
        connecting.whenFailure { promise.fail($0) }
        connecting.whenSuccess { channel in
            let request = "HEAD / HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: warren\r\nConnection: close\r\n\r\n"
            channel.writeAndFlush(channel.allocator.buffer(string: request), promise: nil)
        }
        defer {
            timer.cancel()
            connecting.whenSuccess { $0.close(promise: nil) }
        }
        return try await promise.futureResult.get()
    }
}

struct PeerAPIPingError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Completes with the first line of an HTTP answer (at most 1 KiB), or fails when the connection ends first.
private final class StatusLineReader: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<String>
    private var bytes: [UInt8] = []

    init(promise: EventLoopPromise<String>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        bytes += buffer.readBytes(length: buffer.readableBytes) ?? []
        if let end = bytes.firstIndex(of: 13) ?? bytes.firstIndex(of: 10) {
            promise.succeed(String(decoding: bytes[..<end], as: UTF8.self))
        } else if bytes.count > 1024 {
            promise.fail(PeerAPIPingError("no HTTP status line"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(PeerAPIPingError("the PeerAPI closed the connection without an answer"))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
