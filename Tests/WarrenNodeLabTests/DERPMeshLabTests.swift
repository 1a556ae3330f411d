// Two warren-derp relays meshed in one region, with real nodes homed on different relays of it (issue 13 §3).
//
// warren-control's embedded relay is off; its DERP map comes from a file (derp.paths) naming one region, 900, with
// two nodes: relay A (203.0.113.11) and relay B (203.0.113.12), both warren-derp processes in the lab's internet
// namespace, each given --mesh-with for both and the same mesh key. Two warrend nodes sit behind routers that drop
// all UDP (no direct path, no STUN: every packet between them goes through DERP), and each router refuses TCP to
// one relay: node "ma" reaches only relay A, node "mb" only relay B (the region's first node is refused, so it
// connects to the second). Traffic between them can therefore only cross the mesh: a ping over the tailnet in each
// direction is the proof. The control experiment, the same lab with the relays not meshed, must not carry that
// ping. Namespaces wnl-<pid>m-* / wnl-<pid>n-*, removed afterwards.

import Foundation
import XCTest

final class DERPMeshLabTests: XCTestCase {
    static let relayA = "203.0.113.11", relayB = "203.0.113.12"

    /// warren-derp, built beside warren-control.
    func derpBinary(_ lab: NATLab) throws -> String {
        let path = URL(fileURLWithPath: lab.warrenControl).deletingLastPathComponent().appendingPathComponent("warren-derp").path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw LabError.command("warren-derp is not built next to warren-control (\(path)); run `swift build` first")
        }
        return path
    }

    /// The lab: internet namespace with both relay addresses, the relays (meshed or not), warren-control on the
    /// file map, a user and a reusable key; then the two nodes, up. Returns the nodes and their tailnet addresses.
    func build(_ lab: NATLab, meshed: Bool) async throws -> (a: LabNode, b: LabNode, ipA: String, ipB: String, key: String) {
        try await lab.addNamespace("inet")
        try await lab.must(["ip", "link", "add", "br0", "type", "bridge"], in: "inet")
        for address in [lab.controlAddress, Self.relayA, Self.relayB] {
            try await lab.must(["ip", "addr", "add", "\(address)/24", "dev", "br0"], in: "inet")
        }
        try await lab.must(["ip", "link", "set", "br0", "up"], in: "inet")

        let derp = try derpBinary(lab)
        let meshKey = lab.directory + "/mesh.key"
        try (String(repeating: "7c", count: 32) + "\n").write(toFile: meshKey, atomically: true, encoding: .utf8)
        for (name, address) in [("relay-a", Self.relayA), ("relay-b", Self.relayB)] {
            var arguments = [derp, "--listen", "\(address):8443", "--stun-port", "0", "--hostname", address,
                             "--state-dir", lab.directory + "/" + name, "--log-level", "debug"]
            if meshed {
                arguments += ["--mesh-key-file", meshKey, "--mesh-with", "\(Self.relayA):8443,\(Self.relayB):8443",
                              "--mesh-trust", "insecure-for-tests"]
            }
            _ = try lab.spawn(arguments, in: "inet", log: name)
        }
        for address in [Self.relayA, Self.relayB] {
            let up = await poll(seconds: 20) {
                await lab.run(["python3", "-c", "import socket; socket.create_connection(('\(address)', 8443), 1).close()"],
                              in: "inet").status == 0
            }
            guard up else {
                throw LabError.command("relay \(address) did not listen; logs:\n\(lab.log("relay-a").suffix(2000))\n\(lab.log("relay-b").suffix(2000))")
            }
        }

        // The region: relay A first, then relay B (InsecureForTests: the relays' certificates are self-signed).
        let map = """
            {"Regions": {"900": {"RegionID": 900, "RegionCode": "lab", "RegionName": "Lab", "Nodes": [
              {"Name": "900a", "RegionID": 900, "HostName": "\(Self.relayA)", "IPv4": "\(Self.relayA)", "IPv6": "none",
               "DERPPort": 8443, "STUNPort": -1, "InsecureForTests": true},
              {"Name": "900b", "RegionID": 900, "HostName": "\(Self.relayB)", "IPv4": "\(Self.relayB)", "IPv6": "none",
               "DERPPort": 8443, "STUNPort": -1, "InsecureForTests": true}]}}}
            """
        try map.write(toFile: lab.directory + "/derp-map.json", atomically: true, encoding: .utf8)
        try """
            base_domain: lab.warren
            metrics_listen_addr: "off"
            derp:
              enabled: false
              paths: [\(lab.directory)/derp-map.json]

            """.write(toFile: lab.directory + "/control.yaml", atomically: true, encoding: .utf8)
        try await lab.startControl(log: "control")
        try await lab.control(["users", "create", "lab"])
        let key = try await lab.control(["preauthkeys", "create", "--user", "lab", "--reusable"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard !key.isEmpty, !key.contains("\n") else { throw LabError.command("unexpected pre-auth key output: \(key)") }

        // Routers that drop UDP; each also refuses TCP to the other node's relay (a reset: the node moves on at once).
        try await lab.addRouter(slot: 2, type: .udpBlocked)
        try await lab.addRouter(slot: 3, type: .udpBlocked)
        try await lab.must(["nft", "add", "rule", "ip", "wnl", "fw", "ip", "daddr", Self.relayB, "tcp", "dport", "8443",
                            "counter", "reject", "with", "tcp", "reset"], in: "r2")
        try await lab.must(["nft", "add", "rule", "ip", "wnl", "fw", "ip", "daddr", Self.relayA, "tcp", "dport", "8443",
                            "counter", "reject", "with", "tcp", "reset"], in: "r3")
        let a = try await lab.addNode("ma", slot: 2, host: 2)
        let b = try await lab.addNode("mb", slot: 3, host: 2)
        var addresses: [String] = []
        for node in [a, b] {
            try await lab.must([lab.warren, "--socket", node.socket, "up", "--login-server", "http://\(lab.controlAddress):8080",
                                "--auth-key", key, "--hostname", node.name], in: node.namespace)
            let ip = await pollValue(seconds: 30) { () async -> String? in
                let (status, output) = await lab.run([lab.warren, "--socket", node.socket, "ip", "-4"], in: node.namespace)
                let ip = output.trimmingCharacters(in: .whitespacesAndNewlines)
                return status == 0 && ip.hasPrefix("100.") ? ip : nil
            }
            guard let ip else { throw LabError.command("\(node.name) got no tailnet address:\n\(lab.log(node.log).suffix(3000))") }
            addresses.append(ip)
        }
        return (a, b, addresses[0], addresses[1], key)
    }

    func poll(seconds: Double, _ body: () async -> Bool) async -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if await body() { return true }
            try? await Task.sleep(for: .milliseconds(300))
        } while Date() < deadline
        return false
    }

    func pollValue<T>(seconds: Double, _ body: () async -> T?) async -> T? {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if let value = await body() { return value }
            try? await Task.sleep(for: .milliseconds(300))
        } while Date() < deadline
        return nil
    }

    /// Whether `from` reaches `address` over the tailnet within `seconds` (one-second pings until one answers).
    func reaches(_ lab: NATLab, from node: LabNode, _ address: String, seconds: Double) async -> Bool {
        await poll(seconds: seconds) {
            await lab.run(["ping", "-n", "-c", "1", "-W", "1", address], in: node.namespace, timeout: 5).status == 0
        }
    }

    /// The nft counter's packets on the router's reject rule (how often its node was refused by the other relay).
    func refusals(_ lab: NATLab, router: String) async -> Int {
        let output = await lab.run(["nft", "list", "chain", "ip", "wnl", "fw"], in: router).output
        guard let range = output.range(of: #"counter packets (\d+)"#, options: .regularExpression) else { return -1 }
        return Int(output[range].split(separator: " ").last ?? "") ?? -1
    }

    func testNodesHomedOnDifferentRelaysOfARegionReachEachOtherThroughTheMesh() async throws {
        let lab = try NATLab(tag: "m")
        defer { lab.tearDown() }
        let (a, b, ipA, ipB, _) = try await build(lab, meshed: true)
        let diagnostics = {
            "\nma:\n\(lab.log("ma").suffix(3000))\nmb:\n\(lab.log("mb").suffix(3000))\nrelay-a:\n\(lab.log("relay-a").suffix(3000))"
                + "\nrelay-b:\n\(lab.log("relay-b").suffix(3000))"
        }
        let aToB = await reaches(lab, from: a, ipB, seconds: 40)
        XCTAssertTrue(aToB, "ma (on relay A) never reached mb (on relay B) through the mesh" + diagnostics())
        let bToA = await reaches(lab, from: b, ipA, seconds: 20)
        XCTAssertTrue(bToA, "mb (on relay B) never reached ma (on relay A) through the mesh" + diagnostics())
        // The topology held: mb was refused by relay A (its region's first node) and went on to relay B.
        let refusedB = await refusals(lab, router: "r3")
        XCTAssertGreaterThan(refusedB, 0, "mb's router never refused it relay A; the test did not force the split" + diagnostics())
        // And a packet went from relay to relay: each relay logs its mesh peer's connection.
        XCTAssertTrue(lab.log("relay-a").contains(Self.relayB) || lab.log("relay-b").contains(Self.relayA),
                      "neither relay logged its mesh peer" + diagnostics())
        if aToB && bToA { lab.keepLogs = false } else { lab.keepLogs = true }
    }

    func testWithoutTheMeshTheSameSplitDoesNotConnect() async throws {
        let lab = try NATLab(tag: "n")
        defer { lab.tearDown() }
        let (a, _, _, ipB, _) = try await build(lab, meshed: false)
        // Both nodes are up and homed (each has its address and a relay), yet nothing carries packets between the
        // relays: the ping must fail. This is what makes the meshed test's success mean the mesh.
        let reached = await reaches(lab, from: a, ipB, seconds: 12)
        XCTAssertFalse(reached, "ma reached mb with unmeshed relays: the lab leaks a path besides the mesh\n"
                       + lab.log("ma").suffix(3000))
    }
}
