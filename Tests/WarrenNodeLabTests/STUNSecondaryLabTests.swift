// The embedded relay's region with a second STUN address (derp.stun_secondary_addr): warren-control announces it as a
// STUN-only node of its region, and Warren's netcheck, probing both addresses, tells a NAT whose mapping depends on
// the destination (MappingVariesByDestIP true) from one whose mapping does not (false). Without the second address
// netcheck has one STUN server and leaves the question open (nil), which is what this measures against.
// The lab is the NAT lab's (namespaces wnl-<pid>u-* and wnl-<pid>v-*, removed afterwards): warren-control in the
// internet namespace with STUN on 203.0.113.1:3478 and 203.0.113.250:3478, one node behind a symmetric NAT (masquerade fully-random: a
// new port per destination) and one behind Linux masquerade (endpoint-independent mapping).

import Foundation
import XCTest

final class STUNSecondaryLabTests: XCTestCase {
    static let secondaryAddress = "203.0.113.250"

    /// The internet namespace, warren-control with the given `derp:` section, and a reusable pre-auth key.
    func startControl(_ lab: NATLab, derp: String) async throws -> String {
        try await lab.addNamespace("inet")
        try await lab.must(["ip", "link", "add", "br0", "type", "bridge"], in: "inet")
        try await lab.must(["ip", "addr", "add", "\(lab.controlAddress)/24", "dev", "br0"], in: "inet")
        try await lab.must(["ip", "addr", "add", "\(Self.secondaryAddress)/24", "dev", "br0"], in: "inet")
        try await lab.must(["ip", "link", "set", "br0", "up"], in: "inet")
        try "base_domain: lab.warren\nmetrics_listen_addr: \"off\"\n\(derp)\n"
            .write(toFile: lab.directory + "/control.yaml", atomically: true, encoding: .utf8)
        try await lab.startControl(log: "control")
        try await lab.control(["users", "create", "lab"])
        let key = try await lab.control(["preauthkeys", "create", "--user", "lab", "--reusable"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard !key.isEmpty, !key.contains("\n") else { throw LabError.command("unexpected pre-auth key output: \(key)") }
        return key
    }

    /// A node behind a router of `type`, logged in.
    func node(_ lab: NATLab, _ name: String, slot: Int, type: NATType, key: String) async throws -> LabNode {
        try await lab.addRouter(slot: slot, type: type)
        let node = try await lab.addNode(name, slot: slot, host: 2)
        try await lab.must([lab.warren, "--socket", node.socket, "up", "--login-server", "http://\(lab.controlAddress):8080",
                            "--auth-key", key, "--hostname", name], in: node.namespace)
        return node
    }

    /// What `warren netcheck --format json` says about MappingVariesByDestIP (nil: not reported), once UDP works.
    func mappingVaries(_ lab: NATLab, _ node: LabNode) async throws -> (varies: Bool?, report: String) {
        var last = ""
        for _ in 0..<10 {
            let (status, output) = await lab.run([lab.warren, "--socket", node.socket, "netcheck", "--format", "json"], in: node.namespace)
            last = output
            if status == 0, let object = try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
               object["UDP"] as? Bool == true {
                return (object["MappingVariesByDestIP"] as? Bool, output)
            }
            try await Task.sleep(for: .milliseconds(500))
        }
        throw LabError.command("netcheck never reported UDP on \(node.name): \(last)\n\(lab.log(node.log).suffix(2000))")
    }

    func testASecondSTUNAddressTellsAnEndpointDependentNATFromAnIndependentOne() async throws {
        let lab = try NATLab(tag: "u")
        defer { lab.tearDown() }
        let key = try await startControl(lab, derp: """
            derp:
              host: \(lab.controlAddress)
              port: 8443
              stun_port: 3478
              stun_secondary_addr: \(Self.secondaryAddress):3478
            """)
        let hard = try await node(lab, "hard", slot: 2, type: .symmetric, key: key)
        let easy = try await node(lab, "easy", slot: 3, type: .portRestricted, key: key)
        let (hardVaries, hardReport) = try await mappingVaries(lab, hard)
        let (easyVaries, easyReport) = try await mappingVaries(lab, easy)
        XCTAssertEqual(hardVaries, true, "behind the symmetric NAT: \(hardReport)")
        XCTAssertEqual(easyVaries, false, "behind the endpoint-independent NAT: \(easyReport)")
        // Both prefer the embedded region: its two STUN nodes are one region.
        for report in [hardReport, easyReport] { XCTAssertTrue(report.contains("\"PreferredDERP\" : 900") || report.contains("\"PreferredDERP\":900"), report) }
    }

    func testWithOneSTUNAddressTheQuestionStaysOpen() async throws {
        let lab = try NATLab(tag: "v")
        defer { lab.tearDown() }
        let key = try await startControl(lab, derp: """
            derp:
              host: \(lab.controlAddress)
              port: 8443
              stun_port: 3478
            """)
        let hard = try await node(lab, "hard", slot: 2, type: .symmetric, key: key)
        let (varies, report) = try await mappingVaries(lab, hard)
        XCTAssertNil(varies, "one STUN server cannot tell: \(report)")
    }
}
