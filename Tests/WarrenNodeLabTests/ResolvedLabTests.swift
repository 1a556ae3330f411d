// The host DNS mode for machines where systemd-resolved manages DNS (most desktops and servers on Debian and
// Ubuntu), against a real systemd-resolved: Debian's own binary, unpacked (never installed: its maintainer script
// would repoint the machine's /etc/resolv.conf) and run inside the node's namespace with a D-Bus system bus of
// its own. warrend there sees /etc/resolv.conf pointing at resolved's stub, so it takes the resolved mode: DNS
// server 100.100.100.100 and the tailnet domain as routing and search domain on warren0, set over D-Bus with
// resolvectl. Then the host's resolver (glibc → 127.0.0.53 → resolved → warren0's server) finds peers by short
// and full name while public names still go to the namespace's upstream, and `warren down` takes it all back.
//
// Everything lives in a private mount namespace: the node's /etc is a copy (resolv.conf a symlink to the stub,
// the systemd-resolve account added), /run is a tmpfs, /usr/bin an overlay that adds resolvectl. The host's
// files are never touched.

import Foundation
import XCTest

final class ResolvedLabTests: XCTestCase {
    /// Debian's systemd-resolved, unpacked: `WARREN_RESOLVED_ROOT`, else the cache scripts/setup fills, else unpacked
    /// here from `apt-get download` (nil when none of that works).
    static func resolvedRoot() -> String? {
        let fm = FileManager.default
        func usable(_ root: String) -> Bool {
            fm.isExecutableFile(atPath: root + "/lib/systemd/systemd-resolved") && fm.isExecutableFile(atPath: root + "/usr/bin/resolvectl")
        }
        if let env = ProcessInfo.processInfo.environment["WARREN_RESOLVED_ROOT"], usable(env) { return env }
        let cache = "/var/cache/warren-test/systemd-resolved"
        if usable(cache) { return cache }
        let work = NSTemporaryDirectory() + "warren-resolved-\(getpid())"
        defer { try? fm.removeItem(atPath: work) }
        try? fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        let script = "cd '\(work)' && apt-get download -q systemd-resolved >/dev/null 2>&1 && mkdir -p '\(cache)' && dpkg -x systemd-resolved_*.deb '\(cache)'"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", script]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        p.waitUntilExit()
        return usable(cache) ? cache : nil
    }

    func testResolvedModeConfiguresTheLinkAndTheHostResolverFindsPeers() async throws {
        guard getuid() == 0 else { throw XCTSkip("the NAT lab needs root (network namespaces, TUN devices)") }
        guard let root = Self.resolvedRoot() else {
            if ProcessInfo.processInfo.environment["WARREN_INTEROP_REQUIRED"] == "1" {
                XCTFail("systemd-resolved could not be unpacked (apt-get download systemd-resolved failed)")
                return
            }
            throw XCTSkip("systemd-resolved is not available to unpack (apt-get download systemd-resolved)")
        }
        let lab = try NATLab(tag: "s")
        defer { lab.tearDown() }
        // MagicDNS on: control sends the tailnet domain as a search domain too (headscale's magic_dns).
        lab.extraControlConfig = """
            dns:
              magic_dns: true

            """
        try await lab.start()
        try await lab.must(["ip", "addr", "add", "203.0.113.53/24", "dev", "br0"], in: "inet")
        try await lab.startDNSServer(in: "inet", address: "203.0.113.53", records: ["www.example.com": "192.0.2.80"], log: "upstream")
        let b = try await lab.addNode("b", slot: 3, host: nil)

        // Node a: its namespace on the internet bridge, warrend started inside the resolved environment.
        try await lab.addNamespace("a")
        try await lab.wire(bridge: "br0", in: "inet", to: "a", name: "eth0")
        try await lab.must(["ip", "addr", "add", "203.0.113.10/24", "dev", "eth0"], in: "a")
        try FileManager.default.createDirectory(atPath: lab.directory + "/a", withIntermediateDirectories: true)
        let env = lab.directory + "/resolved-a"
        try FileManager.default.createDirectory(atPath: env, withIntermediateDirectories: true)
        try """
            <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
             "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
            <busconfig>
              <type>system</type>
              <listen>unix:path=/run/dbus/system_bus_socket</listen>
              <auth>EXTERNAL</auth>
              <policy context="default">
                <allow user="*"/><allow own="*"/><allow send_type="method_call"/>
                <allow send_destination="*"/><allow receive_sender="*"/>
              </policy>
            </busconfig>
            """.write(toFile: env + "/dbus.conf", atomically: true, encoding: .utf8)
        let socket = lab.directory + "/a.sock"
        let script = """
            set -e
            cp -a /etc '\(env)/etc'
            rm -f '\(env)/etc/resolv.conf'
            ln -s /run/systemd/resolve/stub-resolv.conf '\(env)/etc/resolv.conf'
            echo 'systemd-resolve:x:0:0:resolve:/:/usr/sbin/nologin' >> '\(env)/etc/passwd'
            echo 'systemd-resolve:x:0:' >> '\(env)/etc/group'
            mkdir -p '\(env)/etc/systemd'
            printf '[Resolve]\\nDNS=203.0.113.53\\nLLMNR=no\\nMulticastDNS=no\\n' > '\(env)/etc/systemd/resolved.conf'
            mount --bind '\(env)/etc' /etc
            mount -t tmpfs tmpfs /run
            mkdir -p /run/dbus /run/systemd
            mount -t overlay overlay -o 'lowerdir=\(root)/usr/bin:/usr/bin' /usr/bin
            ip link set lo up
            dbus-daemon --config-file='\(env)/dbus.conf' --fork --print-pid > '\(env)/dbus.pid'
            '\(root)/lib/systemd/systemd-resolved' > '\(env)/resolved.log' 2>&1 &
            echo $! > '\(env)/resolved.pid'
            for i in $(seq 50); do [ -e /run/systemd/resolve/stub-resolv.conf ] && break; sleep 0.1; done
            exec '\(lab.warrend)' --state-dir '\(lab.directory)/a' --socket '\(socket)' --tun warren0 --verbose
            """
        try script.write(toFile: env + "/start.sh", atomically: true, encoding: .utf8)
        let daemon = try lab.spawn(["unshare", "-m", "--propagation", "private", "sh", env + "/start.sh"], in: "a", log: "a")
        defer {
            // dbus-daemon and resolved outlive warrend (their namespace stays while they run): stop them by PID.
            for file in ["dbus.pid", "resolved.pid"] {
                if let text = try? String(contentsOfFile: env + "/" + file, encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                    kill(pid, SIGKILL)
                }
            }
        }
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: socket), Date() < deadline, daemon.isRunning {
            try await Task.sleep(for: .milliseconds(100))
        }
        guard FileManager.default.fileExists(atPath: socket) else {
            XCTFail("warrend a did not start in the resolved environment:\n\(lab.log("a").suffix(3000))\n\((try? String(contentsOfFile: env + "/resolved.log", encoding: .utf8)) ?? "")")
            return
        }
        let pid = String(daemon.processIdentifier)
        /// A command in node a's namespaces (its mount namespace holds the resolved environment).
        func inA(_ arguments: [String]) async -> String {
            await lab.run(["nsenter", "-t", pid, "-m", "-n"] + arguments).output
        }
        let a = LabNode(name: "a", namespace: "a", socket: socket, log: "a", wanAddress: "203.0.113.10", process: daemon)
        let ipB = try await lab.up(b, ["--accept-dns=false"])
        _ = try await lab.up(a)

        // warrend chose the resolved mode and set the link.
        var status = ""
        for _ in 0..<50 {
            status = await inA(["resolvectl", "status", "warren0", "--no-pager"])
            if status.contains("100.100.100.100") && status.contains("lab.warren") { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        XCTAssertTrue(status.contains("100.100.100.100"), "warren0's DNS server: \(status)")
        XCTAssertTrue(status.contains("lab.warren"), "warren0's domain: \(status)")
        let dnsStatus = await inA([lab.warren, "--socket", socket, "dns", "status"])
        XCTAssertTrue(dnsStatus.contains("systemd-resolved"), "warren dns status names the mode: \(dnsStatus)")
        let resolvConf = await inA(["cat", "/etc/resolv.conf"])
        XCTAssertTrue(resolvConf.contains("127.0.0.53"), "resolv.conf is resolved's stub, left alone: \(resolvConf)")

        // The host's resolver, through resolved: full and short names of a peer, and a public name upstream.
        var full = ""
        for _ in 0..<50 where !full.contains(ipB) {
            full = await inA(["getent", "ahostsv4", "b.lab.warren"])
            if !full.contains(ipB) { try await Task.sleep(for: .milliseconds(200)) }
        }
        let resolvedStatus = full.contains(ipB) ? "" : await inA(["resolvectl", "status", "--no-pager"])
        XCTAssertTrue(full.contains(ipB), "getent b.lab.warren through resolved: \(full)\n\(resolvedStatus)")
        let short = await inA(["getent", "ahostsv4", "b"])
        let stub = short.contains(ipB) ? "" : await inA(["cat", "/etc/resolv.conf"]) + (await inA(["resolvectl", "status", "--no-pager"]))
        XCTAssertTrue(short.contains(ipB), "getent b (search domain on warren0): \(short)\n\(stub)")
        let query = await inA(["resolvectl", "query", "b.lab.warren", "--no-pager"])
        XCTAssertTrue(query.contains(ipB), "resolvectl query: \(query)")
        let publicName = await inA(["getent", "ahostsv4", "www.example.com"])
        XCTAssertTrue(publicName.contains("192.0.2.80"), "a public name through resolved's own upstream: \(publicName)")

        // `warren down` takes the link's settings back.
        _ = try await lab.must([lab.warren, "--socket", a.socket, "down"], in: "a")
        var after = status
        for _ in 0..<50 where after.contains("100.100.100.100") {
            try await Task.sleep(for: .milliseconds(200))
            after = await inA(["resolvectl", "status", "warren0", "--no-pager"])
        }
        XCTAssertFalse(after.contains("100.100.100.100"), "after down, warren0 has no MagicDNS server: \(after)")
        let gone = await inA(["getent", "ahostsv4", "b.lab.warren"])
        XCTAssertFalse(gone.contains(ipB), "after down, the peer's name no longer resolves: \(gone)")
    }
}
