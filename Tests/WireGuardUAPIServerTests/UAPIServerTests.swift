#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization
import WireGuardProtocol
import WireGuardUAPI
import WireGuardUAPIServer
import XCTest

/// A handler that keeps a snapshot and applies updates to it (listen port, fwmark, peers' keys
/// and allowed IPs), like a very small device.
final class FakeDevice: UAPIHandler {
    let state = Mutex((snapshot: DeviceSnapshot(), updates: [DeviceConfigUpdate]()))

    func snapshot() -> DeviceSnapshot { state.withLock { $0.snapshot } }

    func apply(_ update: DeviceConfigUpdate) throws(UAPIError) {
        if update.listenPort == 1 { throw UAPIError(.portInUse, "port 1 is taken in this fake") }
        state.withLock { s in
            s.updates.append(update)
            if let key = update.privateKey { s.snapshot.privateKey = key }
            if let port = update.listenPort { s.snapshot.listenPort = port }
            if let mark = update.fwmark { s.snapshot.fwmark = mark }
            if update.replacePeers { s.snapshot.peers = [] }
            for peer in update.peers {
                let index = s.snapshot.peers.firstIndex { $0.publicKey == peer.publicKey }
                if peer.remove {
                    if let index { s.snapshot.peers.remove(at: index) }
                    continue
                }
                var current: PeerSnapshot
                if let index { current = s.snapshot.peers[index] } else if peer.updateOnly { continue } else {
                    current = PeerSnapshot(publicKey: peer.publicKey)
                }
                if let psk = peer.presharedKey { current.presharedKey = psk }
                if let endpoint = peer.endpoint { current.endpoint = endpoint }
                if let seconds = peer.persistentKeepaliveInterval { current.persistentKeepaliveInterval = seconds }
                if peer.replaceAllowedIPs { current.allowedIPs = [] }
                current.allowedIPs += peer.allowedIPs.map(\.masked)
                if let index { s.snapshot.peers[index] = current } else { s.snapshot.peers.append(current) }
            }
        }
    }
}

/// Connects to `path`, sends `request`, half-closes, and reads the answer to end of stream.
func exchange(_ path: String, _ request: String, halfClose: Bool = true) throws -> String {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: Array(path.utf8) + [0])
    }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    let bytes = Array(request.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { throw POSIXError(.EPIPE) }
        offset += n
    }
    if halfClose { shutdown(fd, Int32(SHUT_WR)) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var out: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        out += buffer[..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

final class UAPIServerTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "wua-\(getpid())-\(UInt32.random(in: 0...UInt32.max))/run/wireguard"
    }

    override func tearDownWithError() throws {
        let top = (directory as NSString).deletingLastPathComponent
        try? FileManager.default.removeItem(atPath: (top as NSString).deletingLastPathComponent)
    }

    /// Starts a server; returns it with a way to wait for its stop reason.
    func startServer(_ handler: FakeDevice, name: String = "wua0", interval: Int32 = 500) throws
        -> (UAPIServer, () -> UAPIServer.StopReason?)
    {
        let listener = try UAPIListener.open(interfaceName: name, directory: directory)
        let server = UAPIServer(listener: listener, handler: handler, socketCheckIntervalMilliseconds: interval)
        let stopped = expectation(description: "server stopped")
        let reason = Mutex<UAPIServer.StopReason?>(nil)
        server.start { r in
            reason.withLock { $0 = r }
            stopped.fulfill()
        }
        return (server, {
            self.wait(for: [stopped], timeout: 10)
            return reason.withLock { $0 }
        })
    }

    func testModesAndPath() throws {
        let (server, waitStop) = try startServer(FakeDevice())
        let path = directory + "/wua0.sock"
        XCTAssertEqual(server.listener.path, path)
        XCTAssertEqual(UAPIListener.socketPath(interfaceName: "wg7"), "/var/run/wireguard/wg7.sock")
        var info = stat()
        XCTAssertEqual(stat(directory, &info), 0)
        XCTAssertEqual(info.st_mode & 0o7777, 0o755)
        XCTAssertEqual(lstat(path, &info), 0)
        XCTAssertEqual(info.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(info.st_mode & 0o7777, 0o700)
        server.stop()
        XCTAssertEqual(waitStop(), .stopped)
        XCTAssertNotEqual(lstat(path, &info), 0, "socket file removed on stop")
    }

    func testGetAndSetOverTheSocket() throws {
        let device = FakeDevice()
        let (server, waitStop) = try startServer(device)
        let path = server.listener.path
        let peer = String(repeating: "ab", count: 32)
        XCTAssertEqual(try exchange(path, "get=1\n\n"), "errno=0\n\n")
        XCTAssertEqual(try exchange(path, "set=1\nlisten_port=51820\npublic_key=\(peer)\nallowed_ip=10.0.0.1/24\n\n"), "errno=0\n\n")
        XCTAssertEqual(try exchange(path, "get=1\n\n"), """
            listen_port=51820
            public_key=\(peer)
            preshared_key=\(String(repeating: "0", count: 64))
            protocol_version=1
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=0
            allowed_ip=10.0.0.0/24
            errno=0


            """)
        server.stop()
        XCTAssertEqual(waitStop(), .stopped)
    }

    func testSeveralRequestsOnOneConnectionAndErrors() throws {
        let device = FakeDevice()
        let (server, waitStop) = try startServer(device)
        let answer = try exchange(server.listener.path,
            "set=1\nfwmark=9\n\nset=1\nlisten_port=1\n\nset=1\nbogus\n\nset=1\nlisten_port=70000\n\nget=1\n\nget=1\nx")
        XCTAssertEqual(answer, "errno=0\n\nerrno=-98\n\nerrno=-71\n\nerrno=-22\n\nfwmark=9\nerrno=0\n\nerrno=-22\n\n")
        XCTAssertEqual(device.state.withLock { $0.updates }, [DeviceConfigUpdate(fwmark: 9)])
        // An unknown operation closes the connection without an answer.
        XCTAssertEqual(try exchange(server.listener.path, "get=1\n\nhello\nget=1\n\n"), "fwmark=9\nerrno=0\n\n")
        server.stop()
        XCTAssertEqual(waitStop(), .stopped)
    }

    func testManyConcurrentConnections() throws {
        let device = FakeDevice()
        let (server, waitStop) = try startServer(device)
        let path = server.listener.path
        let failures = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 32) { i in
            let request = "set=1\npublic_key=\(String(repeating: String(format: "%02x", i), count: 32))\n\nget=1\n\n"
            do {
                let answer = try exchange(path, request)
                if !answer.hasPrefix("errno=0\n\n") || !answer.hasSuffix("errno=0\n\n") { failures.withLock { $0 += 1 } }
            } catch {
                failures.withLock { $0 += 1 }
            }
        }
        XCTAssertEqual(failures.withLock { $0 }, 0)
        XCTAssertEqual(device.snapshot().peers.count, 32)
        server.stop()
        XCTAssertEqual(waitStop(), .stopped)
    }

    func testStopClosesIdleConnections() throws {
        let (server, waitStop) = try startServer(FakeDevice())
        let path = server.listener.path
        let done = expectation(description: "idle client sees end of stream")
        Thread.detachNewThread {
            // Sends a get without half-closing: the connection stays open until the server stops.
            let answer = try? exchange(path, "get=1\n\n", halfClose: false)
            XCTAssertEqual(answer, "errno=0\n\n")
            done.fulfill()
        }
        Thread.sleep(forTimeInterval: 0.2)
        server.stop()
        XCTAssertEqual(waitStop(), .stopped)
        wait(for: [done], timeout: 10)
    }

    func testRemovingTheSocketFileStopsTheServer() throws {
        let (server, waitStop) = try startServer(FakeDevice(), interval: 50)
        XCTAssertEqual(unlink(server.listener.path), 0)
        XCTAssertEqual(waitStop(), .socketRemoved)
    }

    func testStaleSocketIsReplacedLiveOneIsNot() throws {
        // A stale socket file: bound, then its listener closed.
        do {
            let stale = try UAPIListener.open(interfaceName: "wua1", directory: directory)
            XCTAssertNotNil(stale)
        }
        var info = stat()
        XCTAssertEqual(lstat(directory + "/wua1.sock", &info), 0, "left behind")
        let (server, waitStop) = try startServer(FakeDevice(), name: "wua1")
        XCTAssertEqual(try exchange(server.listener.path, "get=1\n\n"), "errno=0\n\n")
        // Now it is live: a second device with the same name must not take it over.
        XCTAssertThrowsError(try UAPIListener.open(interfaceName: "wua1", directory: directory)) { error in
            XCTAssertEqual((error as? UAPIServerError)?.errno, EADDRINUSE)
        }
        XCTAssertEqual(try exchange(server.listener.path, "get=1\n\n"), "errno=0\n\n")
        server.stop()
        XCTAssertEqual(waitStop(), .stopped)
    }

    func testBadInterfaceNames() {
        XCTAssertThrowsError(try UAPIListener.open(interfaceName: "", directory: directory))
        XCTAssertThrowsError(try UAPIListener.open(interfaceName: "a/b", directory: directory))
        XCTAssertThrowsError(try UAPIListener.open(interfaceName: String(repeating: "x", count: 200), directory: directory))
    }

    /// `wg` itself (wireguard-tools) against the server, in the real directory /var/run/wireguard
    /// (wg has no other). Needs root and `wg`.
    func testRealWgTool() throws {
        guard getuid() == 0 else { throw XCTSkip("needs root to use /var/run/wireguard") }
        guard let wg = ["/usr/bin/wg", "/usr/local/bin/wg", "/bin/wg"].first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else { throw XCTSkip("wg (wireguard-tools) is not installed") }
        let device = FakeDevice()
        let name = "wituapi\(getpid() % 1000)"
        let listener = try UAPIListener.open(interfaceName: name)
        let server = UAPIServer(listener: listener, handler: device)
        let stopped = expectation(description: "stopped")
        server.start { _ in stopped.fulfill() }
        defer {
            server.stop()
            wait(for: [stopped], timeout: 10)
        }
        func wgRun(_ arguments: [String]) throws -> (status: Int32, output: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: wg)
            process.arguments = arguments
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self))
        }
        let peer = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
        let set = try wgRun(["set", name, "listen-port", "51999", "fwmark", "0x20", "peer", peer,
                             "endpoint", "[2001:db8::7]:4242", "persistent-keepalive", "25",
                             "allowed-ips", "10.9.0.0/16,fd00:9::/64"])
        XCTAssertEqual(set.status, 0, set.output)
        let dump = try wgRun(["show", name, "dump"])
        XCTAssertEqual(dump.status, 0, dump.output)
        XCTAssertEqual(dump.output, """
            (none)\t(none)\t51999\t0x20
            \(peer)\t(none)\t[2001:db8::7]:4242\t10.9.0.0/16,fd00:9::/64\t0\t0\t0\t25

            """)
        // A port the device refuses comes back as EADDRINUSE, which wg reports.
        let refused = try wgRun(["set", name, "listen-port", "1"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.output.contains("Address already in use"), refused.output)
        let removed = try wgRun(["set", name, "peer", peer, "remove"])
        XCTAssertEqual(removed.status, 0, removed.output)
        XCTAssertEqual(device.snapshot().peers, [])
    }
}
