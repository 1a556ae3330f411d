// The NAT lab: network namespaces joined by veth pairs. An "internet" namespace holds a bridge with
// warren-control (control on 8080, its DERP relay on 8443, STUN on 3478) at 203.0.113.1; each router
// namespace has its WAN port on that bridge and a LAN bridge behind it, and does NAT with nftables; each node
// namespace runs one warrend. Addresses are documentation (RFC 5737) and private ranges, only inside the
// namespaces. Every name starts with `wnl-<pid>` (interfaces in the host namespace, briefly, `wnl<pid>`).
//
// The oracle that decides which path carried traffic does not ask the nodes: nft counters in the internet
// namespace count UDP bytes between two WAN addresses (bridge forward hook) and TCP bytes to and from the
// relay port per WAN address (input and output hooks); for two nodes on one LAN, a counter on the router's
// LAN bridge counts the UDP between them.

import Foundation
import XCTest

/// What a router does to the traffic of the LAN behind it.
enum NATType: String, CaseIterable, Sendable {
    /// No router: the node sits on the internet bridge with a public address.
    case none
    /// Endpoint-independent mapping and filtering ("full cone"): UDP from port 41641 always leaves as
    /// WAN:50041 (a different port, so that the nodes must learn it from STUN), and anything sent to WAN:50041
    /// comes in.
    case cone
    /// Endpoint-independent mapping, address-and-port-dependent filtering: Linux masquerade as is
    /// (Tailscale's "easy" NAT).
    case portRestricted = "prc"
    /// Endpoint-dependent mapping: masquerade fully-random, a new port for every destination ("hard" NAT).
    case symmetric = "sym"
    /// Masquerade, and UDP is not forwarded at all (TCP to control and the relay still is).
    case udpBlocked = "udpblock"
}

/// Which path a burst of traffic took, by the counters.
enum ObservedPath: String, Sendable {
    case direct, derp, unclear
}

struct LabNode: Sendable {
    let name: String
    let namespace: String
    let socket: String
    let log: String
    /// The address the internet sees (the router's WAN address, or the node's own when there is no NAT).
    let wanAddress: String
    let process: Process
}

enum LabError: Error, CustomStringConvertible {
    case command(String)
    var description: String { if case .command(let text) = self { return text } else { return "" } }
}

final class NATLab: @unchecked Sendable {
    let prefix: String
    let hostPrefix: String
    let directory: String
    let warrend: String
    let warren: String
    let warrenControl: String
    private(set) var authKey = ""
    /// The running warren-control.
    private(set) var controlProcess: Process?
    let controlAddress = "203.0.113.1"
    var keepLogs = false
    /// More of warren-control's YAML configuration (top-level keys), set before `start()`.
    var extraControlConfig = ""

    private let lock = NSLock()
    private var processes: [Process] = []
    private var namespaces: [String] = []
    private var wires = 0

    /// Every namespace's resolv.conf at the start: the lab's upstream resolver (see `startUpstreamDNS`).
    static let labResolvConf = "# NAT lab\nnameserver 203.0.113.53\noptions timeout:2 attempts:1\n"

    static var isRequired: Bool { ProcessInfo.processInfo.environment["WARREN_INTEROP_REQUIRED"] == "1" }

    /// Skips (or, when WARREN_INTEROP_REQUIRED=1, fails) when the lab cannot run here.
    static func requirements() throws -> (warrend: String, warren: String, warrenControl: String) {
        func unavailable(_ reason: String) -> Error {
            if isRequired { return LabError.command("NAT lab required (WARREN_INTEROP_REQUIRED=1) but \(reason)") }
            return XCTSkip(reason)
        }
        guard getuid() == 0 else { throw unavailable("needs root to create network namespaces and nftables rules") }
        for tool in ["ip", "nft", "ping", "python3"] where which(tool) == nil {
            throw unavailable("\(tool) is not installed (Debian packages iproute2, nftables, iputils-ping, python3)")
        }
        let testBinary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var found: [String: String] = [:]
        for name in ["warrend", "warren", "warren-control"] {
            var directory = testBinary.deletingLastPathComponent()
            for _ in 0..<4 where found[name] == nil {
                let candidate = directory.appendingPathComponent(name).path
                if FileManager.default.isExecutableFile(atPath: candidate) { found[name] = candidate }
                directory = directory.deletingLastPathComponent()
            }
            if found[name] == nil {
                throw unavailable("\(name) is not built next to the tests; run `swift build --product \(name)` first")
            }
        }
        return (found["warrend"]!, found["warren"]!, found["warren-control"]!)
    }

    static func which(_ tool: String) -> String? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "") + ":/usr/sbin:/usr/bin:/sbin:/bin"
        for directory in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(directory)/\(tool)") {
            return "\(directory)/\(tool)"
        }
        return nil
    }

    /// - Parameter tag: a letter that keeps this lab's names apart from another lab's in the same process.
    init(tag: String = "") throws {
        (warrend, warren, warrenControl) = try Self.requirements()
        let id = getpid() % 100_000
        prefix = "wnl-\(id)\(tag)"
        hostPrefix = "wnl\(id)\(tag)"
        directory = FileManager.default.temporaryDirectory.appendingPathComponent(prefix).path
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    // MARK: Commands

    /// Runs a command (in namespace `ns` when given) and returns its status and output (stdout and stderr).
    @discardableResult
    func run(_ arguments: [String], in ns: String? = nil, input: String? = nil, timeout: Double = 60) async -> (status: Int32, output: String) {
        let process = Process()
        let output = directory + "/cmd-\(UUID().uuidString).out"
        FileManager.default.createFile(atPath: output, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: output) }
        guard let handle = FileHandle(forWritingAtPath: output) else { return (-1, "cannot write \(output)") }
        defer { try? handle.close() }
        if let ns {
            process.executableURL = URL(fileURLWithPath: Self.which("ip") ?? "/usr/sbin/ip")
            process.arguments = ["netns", "exec", "\(prefix)-\(ns)"] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : (Self.which(arguments[0]) ?? arguments[0]))
            process.arguments = Array(arguments.dropFirst())
        }
        process.standardOutput = handle
        process.standardError = handle
        let stdin = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : stdin
        let status: Int32 = await withCheckedContinuation { continuation in
            let exit = ExitOnce(continuation)
            process.terminationHandler = { exit.resume($0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                exit.resume(-1)
                return
            }
            if let input {
                stdin.fileHandleForWriting.write(Data(input.utf8))
                try? stdin.fileHandleForWriting.close()
            }
            let pid = process.processIdentifier
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout) {
                if process.isRunning { kill(pid, SIGKILL) }
            }
            // Foundation's Process can miss a child's exit under load (seen in CI: `ip` left a zombie and the
            // termination handler never ran, so the test waited forever). From 2 s on, reap it here if it is done;
            // whichever of the two sees the exit first answers.
            exit.watch(pid: pid, after: 2, until: timeout + 10)
        }
        return (status, (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    /// Runs a command that must succeed.
    @discardableResult
    func must(_ arguments: [String], in ns: String? = nil, input: String? = nil) async throws -> String {
        let (status, output) = await run(arguments, in: ns, input: input)
        guard status == 0 else {
            throw LabError.command("`\(arguments.joined(separator: " "))`\(ns.map { " in \($0)" } ?? "") exited \(status): \(output)")
        }
        return output
    }

    /// Starts a long-running process in a namespace, its output going to `<log>.log`.
    func spawn(_ arguments: [String], in ns: String, log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.which("ip") ?? "/usr/sbin/ip")
        process.arguments = ["netns", "exec", "\(prefix)-\(ns)"] + arguments
        FileManager.default.createFile(atPath: directory + "/\(log).log", contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: directory + "/\(log).log"))
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        lock.withLock { processes.append(process) }
        return process
    }

    func log(_ name: String) -> String {
        (try? String(contentsOfFile: directory + "/\(name).log", encoding: .utf8)) ?? ""
    }

    // MARK: Topology

    func addNamespace(_ name: String) async throws {
        let full = "\(prefix)-\(name)"
        await run(["ip", "netns", "del", full])
        try await must(["ip", "netns", "add", full])
        lock.withLock { namespaces.append(full) }
        // `ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf over /etc/resolv.conf: each namespace has
        // a resolver configuration of its own, which a warrend inside may rewrite without touching the host's.
        try FileManager.default.createDirectory(atPath: "/etc/netns/\(full)", withIntermediateDirectories: true)
        try Self.labResolvConf.write(toFile: "/etc/netns/\(full)/resolv.conf", atomically: false, encoding: .utf8)
        try await must(["ip", "link", "set", "lo", "up"], in: name)
    }

    /// A veth pair from bridge `bridge` in namespace `bridgeNS` to interface `name` in namespace `ns`.
    func wire(bridge: String, in bridgeNS: String, to ns: String, name: String) async throws {
        let n = lock.withLock { wires += 1; return wires }
        let a = "\(hostPrefix)a\(n)", b = "\(hostPrefix)b\(n)"
        try await must(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
        try await must(["ip", "link", "set", a, "netns", "\(prefix)-\(bridgeNS)"])
        try await must(["ip", "link", "set", b, "netns", "\(prefix)-\(ns)"])
        try await must(["ip", "link", "set", a, "name", "v-\(ns)", "master", bridge, "up"], in: bridgeNS)
        try await must(["ip", "link", "set", b, "name", name, "up"], in: ns)
    }

    /// The internet, warren-control, a user and a reusable pre-auth key.
    func start() async throws {
        try await addNamespace("inet")
        try await must(["ip", "link", "add", "br0", "type", "bridge"], in: "inet")
        try await must(["ip", "addr", "add", "\(controlAddress)/24", "dev", "br0"], in: "inet")
        try await must(["ip", "link", "set", "br0", "up"], in: "inet")
        try await must(["nft", "-f", "-"], in: "inet", input: """
            table bridge wnl {
                chain fw {
                    type filter hook forward priority 0;
                }
            }
            table ip wnl {
                chain in {
                    type filter hook input priority 0;
                }
                chain out {
                    type filter hook output priority 0;
                }
            }

            """)
        let state = directory + "/control"
        try """
            base_domain: lab.warren
            derp:
              host: \(controlAddress)
              port: 8443
              stun_port: 3478

            """.appending(extraControlConfig).write(toFile: directory + "/control.yaml", atomically: true, encoding: .utf8)
        try await startControl(log: "control")
        try await must([warrenControl, "users", "create", "lab", "--state-dir", state])
        authKey = try await must([warrenControl, "preauthkeys", "create", "--user", "lab", "--reusable", "--state-dir", state])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard !authKey.isEmpty, !authKey.contains("\n") else { throw LabError.command("unexpected pre-auth key output: \(authKey)") }
    }

    /// Starts warren-control in `inet` (its state in the lab's directory) and waits until it serves.
    func startControl(log name: String) async throws {
        let control = try spawn([warrenControl, "serve", "--state-dir", directory + "/control", "--listen", "\(controlAddress):8080",
                                 "--config", directory + "/control.yaml"], in: "inet", log: name)
        controlProcess = control
        let deadline = Date().addingTimeInterval(30)
        while !log(name).contains("is serving"), Date() < deadline, control.isRunning {
            try await Task.sleep(for: .milliseconds(100))
        }
        guard log(name).contains("is serving") else {
            throw LabError.command("warren-control did not start; its log:\n\(log(name).suffix(3000))")
        }
    }

    /// The nft rules of a router of `type` whose WAN address is `wan` and LAN 10.`slot`.0.0/24.
    static func natRules(type: NATType, slot: Int, wan: String, mappedPortRange: String? = nil) -> (post: String, pre: String, forward: String) {
        switch type {
        case .none, .portRestricted:
            let udp = mappedPortRange.map { "oifname \"wan\" meta l4proto udp masquerade to :\($0)\n" } ?? ""
            return (udp + "oifname \"wan\" masquerade", "", "")
        case .cone:
            return ("oifname \"wan\" ip saddr 10.\(slot).0.2 udp sport 41641 snat to \(wan):50041\n        oifname \"wan\" masquerade",
                    "iifname \"wan\" udp dport 50041 dnat to 10.\(slot).0.2:41641", "")
        case .symmetric:
            return ("oifname \"wan\" masquerade fully-random", "", "")
        case .udpBlocked:
            return ("oifname \"wan\" masquerade", "", "meta l4proto udp drop")
        }
    }

    /// A router namespace `r<slot>`: WAN 203.0.113.<slot> on the internet, LAN bridge 10.<slot>.0.1/24.
    func addRouter(slot: Int, type: NATType) async throws {
        precondition(type != .none && slot > 1 && slot < 255)
        let r = "r\(slot)", wan = "203.0.113.\(slot)"
        try await addNamespace(r)
        try await wire(bridge: "br0", in: "inet", to: r, name: "wan")
        try await must(["ip", "addr", "add", "\(wan)/24", "dev", "wan"], in: r)
        try await must(["ip", "link", "add", "lan", "type", "bridge"], in: r)
        try await must(["ip", "addr", "add", "10.\(slot).0.1/24", "dev", "lan"], in: r)
        try await must(["ip", "link", "set", "lan", "up"], in: r)
        try await must(["sysctl", "-qw", "net.ipv4.ip_forward=1"], in: r)
        let rules = Self.natRules(type: type, slot: slot, wan: wan)
        // The input chain is a home router's firewall: nothing new comes in to the router itself. Without it
        // a peer's first hole-punching packet, arriving before our node sent anything, leaves a confirmed
        // conntrack entry for the router's own port, and masquerade then gives our node's reply a random
        // port: every port-restricted NAT would turn symmetric towards that peer.
        try await must(["nft", "-f", "-"], in: r, input: """
            table ip wnl {
                chain post {
                    type nat hook postrouting priority srcnat;
                    \(rules.post)
                }
                chain pre {
                    type nat hook prerouting priority dstnat;
                    \(rules.pre)
                }
                chain fw {
                    type filter hook forward priority 0;
                    \(rules.forward)
                }
                chain in {
                    type filter hook input priority 0;
                    iifname "wan" ct state new drop
                }
            }
            table bridge wnl {
                counter lanudp { }
                chain fw {
                    type filter hook forward priority 0;
                    ip saddr 10.\(slot).0.0/24 ip daddr 10.\(slot).0.0/24 meta l4proto udp counter name lanudp
                }
            }

            """)
    }

    /// A node namespace `name` with warrend: behind router `slot` as host 10.<slot>.0.<host>, or, when
    /// `host` is nil, on the internet bridge as 203.0.113.<slot>.
    func addNode(_ name: String, slot: Int, host: Int?) async throws -> LabNode {
        try await addNamespace(name)
        let wan: String
        if let host {
            try await wire(bridge: "lan", in: "r\(slot)", to: name, name: "eth0")
            try await must(["ip", "addr", "add", "10.\(slot).0.\(host)/24", "dev", "eth0"], in: name)
            try await must(["ip", "route", "add", "default", "via", "10.\(slot).0.1"], in: name)
            wan = "203.0.113.\(slot)"
        } else {
            try await wire(bridge: "br0", in: "inet", to: name, name: "eth0")
            try await must(["ip", "addr", "add", "203.0.113.\(slot)/24", "dev", "eth0"], in: name)
            wan = "203.0.113.\(slot)"
        }
        try FileManager.default.createDirectory(atPath: directory + "/\(name)", withIntermediateDirectories: true)
        return try await startDaemon(name, wanAddress: wan, log: name)
    }

    /// Starts warrend in namespace `name` with the state directory and socket of that name.
    func startDaemon(_ name: String, wanAddress wan: String, log logName: String) async throws -> LabNode {
        let socket = directory + "/\(name).sock"
        let process = try spawn([warrend, "--state-dir", directory + "/\(name)", "--socket", socket, "--tun", "warren0", "--verbose"],
                                in: name, log: logName)
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: socket), Date() < deadline, process.isRunning {
            try await Task.sleep(for: .milliseconds(100))
        }
        guard FileManager.default.fileExists(atPath: socket) else {
            throw LabError.command("warrend \(name) did not open its socket; its log:\n\(log(logName).suffix(3000))")
        }
        return LabNode(name: name, namespace: name, socket: socket, log: logName, wanAddress: wan, process: process)
    }

    /// `warren up` with the lab's key (and `extra` flags); returns the node's tailnet IPv4 address.
    func up(_ node: LabNode, _ extra: [String] = []) async throws -> String {
        try await must([warren, "--socket", node.socket, "up", "--login-server", "http://\(controlAddress):8080",
                        "--auth-key", authKey, "--hostname", node.name] + extra, in: node.namespace)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let (status, output) = await run([warren, "--socket", node.socket, "ip", "-4"], in: node.namespace)
            let ip = output.trimmingCharacters(in: .whitespacesAndNewlines)
            if status == 0, ip.hasPrefix("100.") { return ip }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw LabError.command("\(node.name) got no tailnet address; its log:\n\(log(node.log).suffix(3000))")
    }

    /// `warren-control` run against the lab's control state (an admin command).
    @discardableResult
    func control(_ arguments: [String]) async throws -> String {
        try await must([warrenControl] + arguments + ["--state-dir", directory + "/control"])
    }

    /// A bridge `bridge` in namespace `ns` carrying `address` (CIDR) on the bridge itself.
    func addBridge(_ bridge: String, in ns: String, address: String) async throws {
        try await must(["ip", "link", "add", bridge, "type", "bridge"], in: ns)
        try await must(["ip", "addr", "add", address, "dev", bridge], in: ns)
        try await must(["ip", "link", "set", bridge, "up"], in: ns)
    }

    /// An HTTP server on `address:port` in namespace `ns` that answers every GET with the client's address.
    func startEchoServer(in ns: String, address: String, port: Int = 8000) async throws {
        _ = try spawn(["python3", "-c", """
            import http.server, socket, socketserver
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = self.client_address[0].encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *a):
                    pass
            class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
                allow_reuse_address = True
                address_family = socket.AF_INET6 if ":" in "\(address)" else socket.AF_INET
            S(("\(address)", \(port)), H).serve_forever()
            """], in: ns, log: "echo-\(ns)")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if await run(["python3", "-c", "import socket; socket.create_connection(('\(address)', \(port)), 1)"], in: ns).status == 0 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw LabError.command("the echo server on \(address):\(port) in \(ns) did not start")
    }

    /// What the echo server at `address:port` answers `node` (the source address it saw), or nil when it
    /// cannot be reached within `timeout` seconds.
    func echo(from ns: String, _ address: String, port: Int = 8000, timeout: Double = 2) async -> String? {
        let host = address.contains(":") ? "[\(address)]" : address
        let (status, output) = await run(["curl", "-s", "-m", String(timeout), "http://\(host):\(port)/"], in: ns, timeout: timeout + 5)
        return status == 0 ? output.trimmingCharacters(in: .whitespacesAndNewlines) : nil
    }

    /// Polls `echo` until it answers `expected` (any answer when nil), for at most `seconds`; returns the
    /// last answer and how long it took.
    func waitForEcho(from ns: String, _ address: String, expected: String? = nil, within seconds: Double) async -> (answer: String?, after: Double) {
        let start = Date()
        var last: String?
        while Date().timeIntervalSince(start) < seconds {
            last = await echo(from: ns, address, timeout: 1)
            if let last, expected == nil || last == expected { return (last, Date().timeIntervalSince(start)) }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return (last, Date().timeIntervalSince(start))
    }

    /// A small authoritative DNS server on `address`:53 (UDP) in namespace `ns` that answers A queries for
    /// the names in `records` and NXDOMAIN for everything else, logging each query ("query NAME TYPE from IP")
    /// in `<log>.log`.
    func startDNSServer(in ns: String, address: String, records: [String: String], log name: String) async throws {
        let table = records.map { "\"\($0.key.lowercased())\": \"\($0.value)\"" }.joined(separator: ", ")
        _ = try spawn(["python3", "-u", "-c", """
            import socket, struct, sys
            records = {\(table)}
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("\(address)", 53))
            while True:
                data, peer = s.recvfrom(4096)
                if len(data) < 12: continue
                qid, flags, qd = struct.unpack("!HHH", data[:6])
                i, labels = 12, []
                while i < len(data) and data[i] != 0:
                    labels.append(data[i + 1:i + 1 + data[i]].decode("ascii", "replace")); i += 1 + data[i]
                question = data[12:i + 5]
                qtype = struct.unpack("!H", data[i + 1:i + 3])[0]
                name = ".".join(labels).lower()
                answer = records.get(name)
                print("query", name, qtype, "from", peer[0], flush=True)
                if answer is not None and qtype == 1:
                    rr = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(answer)
                    s.sendto(struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + rr, peer)
                else:
                    rcode = 0 if answer is not None else 3
                    s.sendto(struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 0, 0, 0) + question, peer)
            """], in: ns, log: name)
        try await Task.sleep(for: .milliseconds(300))
    }

    // MARK: The oracle

    /// Counters `udp_<id>` (bridge) and `derp_<id>` (ip) for traffic between WAN addresses `a` and `b`.
    func addOracle(_ id: String, _ a: String, _ b: String) async throws {
        let pair = a == b ? a : "{ \(a), \(b) }"
        try await must(["nft", "add", "counter", "bridge", "wnl", "udp_\(id)"], in: "inet")
        try await must(["nft", "add", "rule", "bridge", "wnl", "fw", "ip", "saddr", pair, "ip", "daddr", pair,
                        "meta", "l4proto", "udp", "counter", "name", "udp_\(id)"], in: "inet")
        try await must(["nft", "add", "counter", "ip", "wnl", "derp_\(id)"], in: "inet")
        try await must(["nft", "add", "rule", "ip", "wnl", "in", "ip", "saddr", pair, "tcp", "dport", "8443",
                        "counter", "name", "derp_\(id)"], in: "inet")
        try await must(["nft", "add", "rule", "ip", "wnl", "out", "ip", "daddr", pair, "tcp", "sport", "8443",
                        "counter", "name", "derp_\(id)"], in: "inet")
    }

    /// Bytes counted by a named nft counter in namespace `ns`.
    func counter(_ family: String, _ name: String, in ns: String = "inet") async throws -> Int {
        let json = try await must(["nft", "-j", "list", "counter", family, "wnl", name], in: ns)
        guard let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let items = object["nftables"] as? [[String: Any]],
              let counter = items.compactMap({ $0["counter"] as? [String: Any] }).first,
              let bytes = counter["bytes"] as? Int
        else { throw LabError.command("cannot read counter \(name): \(json)") }
        return bytes
    }

    // MARK: Node views

    /// The peer's CurAddr in `node`'s `warren status --json` ("" when it is relayed), found by tailnet IP.
    func curAddr(of node: LabNode, peer ip: String) async -> String? {
        let (status, output) = await run([warren, "--socket", node.socket, "status", "--json"], in: node.namespace)
        guard status == 0, let object = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
              let peers = object["Peer"] as? [String: [String: Any]]
        else { return nil }
        for peer in peers.values where (peer["TailscaleIPs"] as? [String])?.contains(ip) == true {
            return peer["CurAddr"] as? String ?? ""
        }
        return nil
    }

    /// Empties the conntrack table of a namespace (netlink IPCTNL_MSG_CT_DELETE with no attributes, which
    /// is what `conntrack -F` sends), so that the tools need no conntrack package.
    func flushConntrack(in ns: String) async throws {
        try await must(["python3", "-c", """
            import socket, struct
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)
            s.bind((0, 0))
            s.send(struct.pack("=IHHII", 20, (1 << 8) | 2, 1 | 4, 1, 0) + struct.pack("=BBH", socket.AF_INET, 0, 0))
            error = struct.unpack("=i", s.recv(4096)[16:20])[0]
            raise SystemExit(0 if error == 0 else "conntrack flush failed: %d" % error)
            """], in: ns)
    }

    // MARK: Teardown

    func tearDown() {
        let running = lock.withLock { processes }
        for process in running.reversed() where process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(10)
        while running.contains(where: \.isRunning), Date() < deadline { usleep(100_000) }
        for process in running where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for ns in lock.withLock({ namespaces }).reversed() {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.which("ip") ?? "/usr/sbin/ip")
            process.arguments = ["netns", "del", ns]
            try? process.run()
            process.waitUntilExit()
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(ns)")
        }
        if keepLogs {
            print("NAT lab logs kept in \(directory)")
        } else {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}

/// Resumes a command's continuation exactly once: from Foundation's termination handler, or from `watch`, which
/// reaps the child itself when Foundation missed its exit.
final class ExitOnce: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Int32, Never>?

    init(_ continuation: CheckedContinuation<Int32, Never>) { self.continuation = continuation }

    func resume(_ status: Int32) {
        lock.lock()
        let c = continuation
        continuation = nil
        lock.unlock()
        c?.resume(returning: status)
    }

    private var pending: Bool {
        lock.lock()
        defer { lock.unlock() }
        return continuation != nil
    }

    /// Every second from `after` seconds: a child that has exited but is still unreaped is reaped and its status
    /// answered; at `until` seconds the wait ends with -1.
    func watch(pid: pid_t, after: Double, until: Double) {
        DispatchQueue.global().asyncAfter(deadline: .now() + after) { [self] in
            guard pending else { return }
            var raw: Int32 = 0
            if waitpid(pid, &raw, WNOHANG) == pid {
                // WIFEXITED / WEXITSTATUS, and a signal's number as negative.
                let signal = raw & 0x7f
                resume(signal == 0 ? (raw >> 8) & 0xff : -signal)
                return
            }
            if after + 1 > until {
                resume(-1)
                return
            }
            watch(pid: pid, after: 1, until: until - after)
        }
    }
}
