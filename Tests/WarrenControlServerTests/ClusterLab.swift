// The cluster lab (issue 13 §2): two `warren-control serve` processes on one PostgreSQL database, with one Noise key
// file, behind Debian's haproxy in TCP mode, and a standalone warren-derp relay that both announce. Everything listens
// on 127.0.0.1 (ports from LoopbackPort.free()); PostgreSQL is the test process's own (PostgresTestServer, a fresh
// database per lab). Files live in /tmp/wccl-<random>, removed afterwards unless a test failed (then the path is
// printed). Every process the lab starts is posix_spawn'ed, tracked by its pid, and stopped by that pid (SIGTERM,
// SIGKILL after 5 s); none is ever found by name.
//
// Why a standalone relay and not each instance's embedded one (by default): a relay inside the process that gets
// `kill -9` would take its clients' home relay down with the control connection, mixing a relay failover into the
// control failover under test. `meshEmbeddedRelays()` turns the embedded relays on instead, meshed into one region
// (derp.mesh_with, ClusterEmbeddedRelayMeshTests): unmeshed, two clients homed on the relays of two different
// instances could not reach each other through DERP. One warren-derp
// announced by both instances through the same DERP map file (`derp.paths`, embedded relay off) gives every client the
// same map whichever instance serves it, and outlives either instance.
//
// Why haproxy in TCP mode: a client's ts2021 connection is one long TCP connection (Noise, then HTTP/2 with the map
// stream inside), so the balancer must not look inside; each new connection goes to a live backend (`balance
// roundrobin`, an HTTP health check of `/health` every 300 ms, `option redispatch` with retries so a connection refused
// by a dead backend is retried on the other at once).

import Foundation
import WarrenDERPTransport
import WarrenTestProbes
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A set-up step that failed (always a failure, never a skip).
struct ClusterLabError: Error, CustomStringConvertible {
    let description: String
}

/// A process the lab started: its pid, and its output file.
final class ClusterProcess: @unchecked Sendable {
    let name: String
    let pid: pid_t
    let log: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    init(name: String, pid: pid_t, log: String) {
        self.name = name
        self.pid = pid
        self.log = log
    }

    /// Whether it still runs (reaps it when it has ended).
    var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        if exitStatus != nil { return false }
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid || (result < 0 && errno == ECHILD) {
            exitStatus = status
            return false
        }
        return true
    }

    /// Sends `signal` to this pid (only while it has not been reaped, so the pid cannot have been reused).
    func signal(_ signal: Int32) {
        lock.lock()
        defer { lock.unlock() }
        if exitStatus == nil { kill(pid, signal) }
    }

    /// SIGTERM, then SIGKILL after `grace` seconds; waits for it to end.
    func stop(grace: Double = 5) {
        guard isRunning else { return }
        signal(SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while isRunning, Date() < deadline { usleep(20_000) }
        if isRunning {
            signal(SIGKILL)
            while isRunning { usleep(20_000) }
        }
    }

    /// `kill -9`, and waits until it is gone.
    func kill9() {
        signal(SIGKILL)
        while isRunning { usleep(5_000) }
    }

    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
}

enum ClusterSpawn {
    /// Starts `arguments` with stdin from /dev/null and stdout and stderr into `log`.
    static func start(_ arguments: [String], log: String, environment: [String: String]? = nil, name: String) throws -> ClusterProcess {
        do {
            let pid = try LoggedSpawn.start(arguments, log: log, environment: environment)
            return ClusterProcess(name: name, pid: pid, log: log)
        } catch let error as LoggedSpawn.Failure {
            throw ClusterLabError(description: error.description)
        }
    }

    /// Runs a command to its end (killed after `timeout` seconds) and returns its status and output.
    static func run(_ arguments: [String], timeout: Double = 60, scratch: String) throws -> (status: Int32, output: String) {
        let log = scratch + "/cmd-\(UUID().uuidString.prefix(8)).out"
        defer { unlink(log) }
        let process = try start(arguments, log: log, name: (arguments[0] as NSString).lastPathComponent)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if Date() > deadline {
                process.kill9()
                return (-1, "timed out after \(timeout) s: \(arguments.joined(separator: " "))\n" + process.output)
            }
            usleep(10_000)
        }
        return (process.exitCode, process.output)
    }
}

extension ClusterProcess {
    /// The exit status once ended (a signal as its negative number), else 0.
    var exitCode: Int32 {
        _ = isRunning
        lock.lock()
        defer { lock.unlock() }
        guard let raw = exitStatus else { return 0 }
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : -signal
    }
}

final class ClusterLab: @unchecked Sendable {
    struct Instance {
        let name: String
        let port: Int
        let stateDirectory: String
        let config: String
        var process: ClusterProcess?
    }

    static var isRequired: Bool { ProcessInfo.processInfo.environment["WARREN_INTEROP_REQUIRED"] == "1" }

    /// A skip, or a failure under WARREN_INTEROP_REQUIRED=1.
    static func unavailable(_ reason: String) -> Error {
        isRequired ? ClusterLabError(description: "cluster lab required (WARREN_INTEROP_REQUIRED=1) but \(reason)") : XCTSkip(reason)
    }

    let directory: String
    let postgres: PostgresTestServer
    let database: String
    let warrenControl: String
    let warrenDerp: String
    let haproxy: String
    let balancerPort: Int
    let derpPort: Int
    let stunPort: Int
    private(set) var instances: [Instance] = []
    private let lock = NSLock()
    private var processes: [ClusterProcess] = []
    var keepFiles = false
    /// The client namespace's network namespaces and its veth end on the host (see `addClientNamespace`).
    private var namespaces: [String] = []
    private var hostInterfaces: [String] = []
    /// The host's end of the client namespace's veth pair: the balancer and the relay listen here too, when set.
    private(set) var hostSideAddress: String?
    static let hostSide = "198.51.100.201", namespaceSide = "198.51.100.202"

    var balancerURL: String { "http://127.0.0.1:\(balancerPort)" }
    var haproxySocket: String { directory + "/haproxy.sock" }

    /// The binaries, PostgreSQL and haproxy, or a skip (a failure when required) naming what is missing.
    init(instanceCount: Int = 2) throws {
        guard getuid() == 0 else { throw Self.unavailable("needs root (PostgreSQL runs as the postgres user through runuser)") }
        let control: String
        do {
            control = try RealTailscaleClientTests.warrenControlBinary()
        } catch {
            throw Self.unavailable("warren-control is not built next to the tests; run `swift build` first")
        }
        let derp = URL(fileURLWithPath: control).deletingLastPathComponent().appendingPathComponent("warren-derp").path
        guard FileManager.default.isExecutableFile(atPath: derp) else {
            throw Self.unavailable("warren-derp is not built next to warren-control (\(derp)); run `swift build` first")
        }
        guard let haproxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy"].first(where: FileManager.default.isExecutableFile) else {
            throw Self.unavailable("haproxy is not installed (scripts/setup.d/haproxy.sh installs Debian's)")
        }
        do {
            postgres = try PostgresTestServer.shared()
        } catch let error as PostgresTestServer.Unavailable {
            throw error.required ? ClusterLabError(description: error.description) : XCTSkip(error.description)
        }
        warrenControl = control
        warrenDerp = derp
        self.haproxy = haproxy
        var template = Array("/tmp/wccl-XXXXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ClusterLabError(description: "mkdtemp: errno \(errno)") }
        directory = String(cString: made)
        Self.sweepAbandoned()
        // The owner, so that a later run removes what a crashed one left (see sweepAbandoned).
        _ = FileManager.default.createFile(atPath: directory + "/owner.pid", contents: Data("\(getpid())\n".utf8))
        database = try postgres.createDatabase(prefix: "cluster")
        balancerPort = try LoopbackPort.free()
        derpPort = try LoopbackPort.free()
        stunPort = try LoopbackPort.free(udp: true)
        for index in 0..<instanceCount {
            let name = String(UnicodeScalar(UInt8(97 + index)))  // a, b, ...
            let port = try LoopbackPort.free()
            instances.append(Instance(name: name, port: port, stateDirectory: directory + "/\(name)",
                                      config: directory + "/\(name).yaml", process: nil))
        }
    }

    /// Removes the directories (and the client namespace with its veth pair) of earlier test processes that died
    /// without tearing down: /tmp/wccl-* whose owner.pid names no live process.
    static func sweepAbandoned() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? [] where name.hasPrefix("wccl-") {
            let directory = "/tmp/" + name
            guard let text = try? String(contentsOfFile: directory + "/owner.pid", encoding: .utf8),
                  let owner = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  owner != getpid(), kill(owner, 0) != 0, errno == ESRCH else { continue }
            if let namespace = try? String(contentsOfFile: directory + "/namespace", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines), namespace.hasPrefix("wccl-") {
                _ = try? ClusterSpawn.run([ip, "netns", "del", namespace], timeout: 20, scratch: "/tmp")
                try? FileManager.default.removeItem(atPath: "/etc/netns/\(namespace)")
            }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    // MARK: Processes

    /// Starts a process whose output goes to `<directory>/<log>.log`.
    @discardableResult
    func spawn(_ arguments: [String], log: String, environment: [String: String]? = nil) throws -> ClusterProcess {
        let process = try ClusterSpawn.start(arguments, log: directory + "/\(log).log", environment: environment, name: log)
        lock.withLock { processes.append(process) }
        return process
    }

    func log(_ name: String) -> String {
        (try? String(contentsOfFile: directory + "/\(name).log", encoding: .utf8)) ?? ""
    }

    func tail(_ name: String, _ count: Int = 3000) -> String {
        "--- \(name).log (last \(count) characters) ---\n" + String(log(name).suffix(count))
    }

    /// Waits until `log` contains `text`; throws with the log's end when it does not in time or the process ends.
    func waitFor(log name: String, containing text: String, timeout: Double, process: ClusterProcess) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if log(name).contains(text) { return }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        if log(name).contains(text) { return }
        throw ClusterLabError(description: "\(name) did not print \"\(text)\" (running: \(process.isRunning))\n\(tail(name))")
    }

    /// Stops every process still running (newest first), deletes the namespace and its veth pair, then removes the
    /// files unless `keepFiles`.
    /// Tears down after a test: files kept when it failed (or WARREN_CLUSTER_KEEP_FILES=1).
    func tearDown(after run: XCTestRun?) {
        let failed = run.map { $0.totalFailureCount > 0 || $0.unexpectedExceptionCount > 0 } ?? true
        keepFiles = failed || ProcessInfo.processInfo.environment["WARREN_CLUSTER_KEEP_FILES"] == "1"
        tearDown()
    }

    func tearDown() {
        for process in lock.withLock({ processes }).reversed() { process.stop() }
        for namespace in namespaces.reversed() {
            _ = try? ClusterSpawn.run([Self.ip, "netns", "del", namespace], timeout: 20, scratch: "/tmp")
            try? FileManager.default.removeItem(atPath: "/etc/netns/\(namespace)")
        }
        for interface in hostInterfaces {
            _ = try? ClusterSpawn.run([Self.ip, "link", "del", interface], timeout: 20, scratch: "/tmp")
        }
        if keepFiles {
            print("ClusterLab: files kept in \(directory)")
        } else {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    // MARK: A namespace for a client with a TUN device

    static var ip: String { ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first(where: FileManager.default.isExecutableFile) ?? "/usr/sbin/ip" }

    /// A network namespace `wccl-<pid>-<tag>` joined to this host by a veth pair (`wcl<pid><tag>` here, 198.51.100.201/30;
    /// 198.51.100.202/30 inside, default route through it), with a resolv.conf of its own (bind-mounted by
    /// `ip netns exec`, so a client inside never touches the host's). Call before `startRelay` and `startBalancer`:
    /// both then listen on the host's end too. Returns the namespace's name.
    func addClientNamespace(_ tag: String) throws -> String {
        let id = getpid() % 100_000
        let namespace = "wccl-\(id)-\(tag)", host = "wcl\(id)\(tag)", inner = "wcl\(id)\(tag)n"
        func must(_ arguments: [String]) throws {
            let result = try ClusterSpawn.run(arguments, timeout: 20, scratch: directory)
            guard result.status == 0 else {
                throw ClusterLabError(description: "`\(arguments.joined(separator: " "))` exited \(result.status): \(result.output)")
            }
        }
        _ = try? ClusterSpawn.run([Self.ip, "netns", "del", namespace], timeout: 20, scratch: directory)
        _ = try? ClusterSpawn.run([Self.ip, "link", "del", host], timeout: 20, scratch: directory)
        guard try ClusterSpawn.run([Self.ip, "netns", "add", namespace], timeout: 20, scratch: directory).status == 0 else {
            throw Self.unavailable("cannot create network namespace \(namespace)")
        }
        namespaces.append(namespace)
        try (namespace + "\n").write(toFile: directory + "/namespace", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "/etc/netns/\(namespace)", withIntermediateDirectories: true)
        try "nameserver \(Self.hostSide)\n".write(toFile: "/etc/netns/\(namespace)/resolv.conf", atomically: false, encoding: .utf8)
        try must([Self.ip, "link", "add", host, "type", "veth", "peer", "name", inner])
        hostInterfaces.append(host)
        try must([Self.ip, "link", "set", inner, "netns", namespace])
        try must([Self.ip, "addr", "add", "\(Self.hostSide)/30", "dev", host])
        try must([Self.ip, "link", "set", host, "up"])
        let inside = [Self.ip, "netns", "exec", namespace]
        try must(inside + [Self.ip, "link", "set", "lo", "up"])
        try must(inside + [Self.ip, "addr", "add", "\(Self.namespaceSide)/30", "dev", inner])
        try must(inside + [Self.ip, "link", "set", inner, "up"])
        try must(inside + [Self.ip, "route", "add", "default", "via", Self.hostSide])
        hostSideAddress = Self.hostSide
        return namespace
    }

    // MARK: The relay

    /// warren-derp (TLS with a self-signed certificate, STUN on its own port) on 127.0.0.1, or on the client
    /// namespace's host address when there is one, and the DERP map file that announces it (region 900).
    func startRelay() async throws {
        let address = hostSideAddress ?? "127.0.0.1"
        let relay = try spawn([warrenDerp, "--listen", "\(address):\(derpPort)", "--stun-port", String(stunPort), "--hostname", address,
                               "--state-dir", directory + "/derp"], log: "derp")
        try await waitFor(log: "derp", containing: "DERP relay ready", timeout: 30, process: relay)
        try """
            {"Regions": {"900": {"RegionID": 900, "RegionCode": "cluster", "RegionName": "Cluster relay", "Nodes": [
              {"Name": "900a", "RegionID": 900, "HostName": "\(address)", "IPv4": "\(address)", "IPv6": "none",
               "DERPPort": \(derpPort), "STUNPort": \(stunPort), "InsecureForTests": true}]}}}
            """.write(toFile: directory + "/derp-map.json", atomically: true, encoding: .utf8)
    }

    // MARK: The instances

    /// Each instance's `derp:` section when the instances' embedded relays are used instead of the standalone relay
    /// (see `meshEmbeddedRelays`), by instance name.
    private(set) var embeddedRelaySections: [String: String] = [:]
    /// Each instance's embedded relay, by instance name: its DERP port, STUN port and certificate pin.
    private(set) var embeddedRelays: [String: (derpPort: Int, stunPort: Int, pin: String)] = [:]

    /// Turns on each instance's embedded relay (on 127.0.0.1, a DERP and a STUN port of its own, its self-signed
    /// certificate made now so that its pin is known) meshed with the others' (`derp.mesh_with`, one shared
    /// `derp.mesh_key_path`, the same list for every instance), instead of the standalone relay: call before
    /// starting the instances, and do not call `startRelay`.
    func meshEmbeddedRelays() throws {
        let key = directory + "/derp-mesh.key"
        var random = SystemRandomNumberGenerator()
        let hex = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &random)) }.joined()
        guard FileManager.default.createFile(atPath: key, contents: Data((hex + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw ClusterLabError(description: "cannot write \(key)")
        }
        for instance in instances {
            let pin = try DERPCertificate.loadOrCreateSelfSigned(directory: instance.stateDirectory + "/derp", hostnames: ["127.0.0.1"]).pin
            embeddedRelays[instance.name] = (try LoopbackPort.free(), try LoopbackPort.free(udp: true), pin)
        }
        let list = instances.map { instance -> String in
            let relay = embeddedRelays[instance.name]!
            return "    - {addr: \"127.0.0.1:\(relay.derpPort)\", cert_name: \"\(relay.pin)\", stun_port: \(relay.stunPort)}"
        }.joined(separator: "\n")
        for instance in instances {
            let relay = embeddedRelays[instance.name]!
            embeddedRelaySections[instance.name] = """
                derp:
                  enabled: true
                  host: 127.0.0.1
                  port: \(relay.derpPort)
                  stun_port: \(relay.stunPort)
                  mesh_key_path: \(key)
                  mesh_with:
                \(list)
                """
        }
    }

    /// The instance's configuration: its own listen port, state directory (admin socket) and log; the shared Noise key
    /// file, database and DERP map (or its embedded relay, meshed: `meshEmbeddedRelays`); metrics off; debug logs (map
    /// streams opened, with their node).
    func writeConfig(_ instance: Instance, extra: String) throws {
        let derp = embeddedRelaySections[instance.name] ?? """
            derp:
              enabled: false
              paths: [\(directory)/derp-map.json]
            """
        try """
            listen_addr: 127.0.0.1:\(instance.port)
            server_url: \(balancerURL)
            metrics_listen_addr: "off"
            state_dir: \(instance.stateDirectory)
            base_domain: cluster.warren
            log_level: debug
            ephemeral_inactivity_timeout: 10s
            noise:
              private_key_path: \(directory)/noise.key
            \(derp)
            database:
              type: postgres
              postgres:
                host: 127.0.0.1
                port: \(postgres.port)
                name: \(database)
                user: \(postgres.user)
                pass: \(postgres.password)
                ssl: false
                max_open_conns: 4

            """.appending(extra).write(toFile: instance.config, atomically: true, encoding: .utf8)
    }

    /// Starts instance `index` (writing its configuration first) and waits until it serves.
    func startInstance(_ index: Int, extraConfig: String = "") async throws {
        var instance = instances[index]
        try writeConfig(instance, extra: extraConfig)
        // Each start appends to the instance's log, after a marker line.
        let path = directory + "/instance-\(instance.name).log"
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let before = log("instance-\(instance.name)").count
        let process = try spawn([warrenControl, "serve", "--config", instance.config], log: "instance-\(instance.name)")
        instance.process = process
        instances[index] = instance
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, process.isRunning, !String(log("instance-\(instance.name)").dropFirst(before)).contains("is serving") {
            try await Task.sleep(for: .milliseconds(50))
        }
        guard String(log("instance-\(instance.name)").dropFirst(before)).contains("is serving") else {
            throw ClusterLabError(description: "instance \(instance.name) did not start (running: \(process.isRunning))\n"
                                  + tail("instance-\(instance.name)"))
        }
    }

    /// `kill -9` of instance `index`.
    func killInstance(_ index: Int) {
        instances[index].process?.kill9()
    }

    func instanceLog(_ index: Int) -> String { log("instance-\(instances[index].name)") }

    /// An admin command through instance `index`'s admin socket; throws unless it exits 0.
    @discardableResult
    func admin(_ index: Int, _ arguments: [String], timeout: Double = 60) throws -> String {
        let result = try ClusterSpawn.run([warrenControl] + arguments + ["--state-dir", instances[index].stateDirectory],
                                          timeout: timeout, scratch: directory)
        guard result.status == 0 else {
            throw ClusterLabError(description: "`warren-control \(arguments.joined(separator: " "))` through instance "
                                  + "\(instances[index].name) exited \(result.status): \(result.output)")
        }
        return result.output
    }

    /// A user and a pre-auth key (reusable unless told), created through instance `index`; returns the key.
    func createKey(through index: Int, user: String, reusable: Bool = true, ephemeral: Bool = false) throws -> String {
        let users = try admin(index, ["users", "list", "-o", "json"])
        if !users.contains("\"\(user)\"") { try admin(index, ["users", "create", user]) }
        var arguments = ["preauthkeys", "create", "--user", user, "--expiration", "2h"]
        if reusable { arguments.append("--reusable") }
        if ephemeral { arguments.append("--ephemeral") }
        let key = try admin(index, arguments).trimmingCharacters(in: .whitespacesAndNewlines)
        guard key.hasPrefix("wkey-auth-") || key.hasPrefix("hskey-auth-"), !key.contains("\n") else {
            throw ClusterLabError(description: "unexpected pre-auth key output: \(key)")
        }
        return key
    }

    /// The lines of instance `index`'s log (from character `from` on) that say a map stream of node `id` opened.
    func mapStreamsOpened(_ index: Int, node id: Int64, from: Int = 0) -> Int {
        String(instanceLog(index).dropFirst(from)).split(separator: "\n").filter {
            $0.contains("map stream opened") && $0.contains("node=\(id) ")
        }.count
    }

    // MARK: The store

    struct StoredNode: Equatable {
        let id: Int64
        let name: String
        let ipv4: String
        let ipv6: String
        let ephemeral: Bool
    }

    /// The nodes table, read with psql (not through either instance).
    func storedNodes() throws -> [StoredNode] {
        let text = try postgres.psql("SELECT id, given_name, coalesce(ipv4, ''), coalesce(ipv6, ''), ephemeral FROM nodes ORDER BY id",
                                     database: database)
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
            guard fields.count == 5, let id = Int64(fields[0]) else { return nil }
            return StoredNode(id: id, name: fields[1], ipv4: fields[2], ipv6: fields[3], ephemeral: fields[4] == "t")
        }
    }

    // MARK: The balancer

    /// haproxy in TCP mode on 127.0.0.1:balancerPort in front of every instance, with health checks and a stats socket
    /// (admin level, for maintenance states and the servers' status).
    func startBalancer() async throws {
        let servers = instances.map {
            "    server \($0.name) 127.0.0.1:\($0.port) check inter 300ms fastinter 200ms downinter 300ms fall 2 rise 2"
        }.joined(separator: "\n")
        try """
            global
                maxconn 2000
                stats socket \(haproxySocket) mode 600 level admin
                log stdout format raw local0 info

            defaults
                mode tcp
                log global
                option tcplog
                option redispatch
                retries 3
                timeout connect 1s
                timeout client 10m
                timeout server 10m
                timeout check 1s

            frontend control
                bind 127.0.0.1:\(balancerPort)
            \(hostSideAddress.map { "    bind \($0):\(balancerPort)" } ?? "")
                default_backend instances

            backend instances
                balance roundrobin
                option httpchk GET /health
                http-check expect status 200
            \(servers)

            """.write(toFile: directory + "/haproxy.cfg", atomically: true, encoding: .utf8)
        let check = try ClusterSpawn.run([haproxy, "-c", "-f", directory + "/haproxy.cfg"], timeout: 30, scratch: directory)
        guard check.status == 0 else { throw ClusterLabError(description: "haproxy refused its configuration: \(check.output)") }
        let process = try spawn([haproxy, "-db", "-f", directory + "/haproxy.cfg"], log: "haproxy")
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, process.isRunning, (try? balancerCommand("show info")) == nil {
            try await Task.sleep(for: .milliseconds(50))
        }
        guard (try? balancerCommand("show info")) != nil else {
            throw ClusterLabError(description: "haproxy did not open its stats socket (running: \(process.isRunning))\n\(tail("haproxy"))")
        }
    }

    /// One command on haproxy's stats socket; returns its answer.
    @discardableResult
    func balancerCommand(_ command: String) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClusterLabError(description: "socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(haproxySocket.utf8)
        guard path.count < MemoryLayout.size(ofValue: address.sun_path) else { throw ClusterLabError(description: "socket path too long") }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.enumerated() { buffer[index] = byte }
            buffer[path.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { throw ClusterLabError(description: "connect \(haproxySocket): errno \(errno)") }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let line = Array((command + "\n").utf8)
        guard write(fd, line, line.count) == line.count else { throw ClusterLabError(description: "write to the stats socket: errno \(errno)") }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            answer += buffer[0..<count]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    /// Each backend server's status (UP, DOWN, MAINT, ...) and current sessions, from `show stat`.
    func balancerServers() throws -> [String: (status: String, sessions: Int)] {
        let lines = try balancerCommand("show stat").split(separator: "\n")
        guard let header = lines.first, header.hasPrefix("# ") else { return [:] }
        let columns = header.dropFirst(2).split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let name = columns.firstIndex(of: "svname"), let proxy = columns.firstIndex(of: "pxname"),
              let status = columns.firstIndex(of: "status"), let current = columns.firstIndex(of: "scur") else { return [:] }
        var servers: [String: (String, Int)] = [:]
        for line in lines.dropFirst() {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard fields.count > max(name, status, current, proxy), fields[proxy] == "instances",
                  fields[name] != "BACKEND", fields[name] != "FRONTEND" else { continue }
            servers[fields[name]] = (fields[status], Int(fields[current]) ?? 0)
        }
        return servers
    }

    /// Waits until haproxy sees backend `name` in `status` (UP or DOWN, by its health checks).
    func waitForBalancer(_ name: String, status wanted: String, timeout: Double = 20) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < deadline {
            last = (try? balancerServers()[name]?.status) ?? "?"
            if last.hasPrefix(wanted) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw ClusterLabError(description: "haproxy never saw \(name) \(wanted) (last: \(last))\n\(tail("haproxy"))")
    }

    /// Puts backend `name` in maintenance (no new connections; open ones stay) or back in service.
    func setBalancer(_ name: String, maintenance: Bool) throws {
        let answer = try balancerCommand("set server instances/\(name) state \(maintenance ? "maint" : "ready")")
        guard answer.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw ClusterLabError(description: "haproxy: set server \(name): \(answer)")
        }
    }
}

/// Time since `start`, in seconds.
func secondsSince(_ start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}
