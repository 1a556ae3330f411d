// The host's resolv.conf handling without a lab: parsing as the C library reads it, and the direct mode's
// rewrite, restore, crash recovery (a new instance over Warren's file puts the host's back) and refusal to
// guess when the backup is gone, all on files in a temporary directory.

import Foundation
import WarrenNetMap
import WarrenNode
import WarrenPacket
import XCTest

final class HostDNSTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-hostdns-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testParsingFollowsTheCLibrary() {
        let conf = ResolvConf(parsing: """
            # comment
            nameserver 192.0.2.1 # trailing comment
            nameserver fe80::1%eth0
            nameserver not-an-address
            domain first.example
            search a.example b.example
            options ndots:2 timeout:1
            sortlist 10.0.0.0
            """)
        XCTAssertEqual(conf.nameservers, [IPAddress("192.0.2.1")!, IPAddress("fe80::1")!])
        XCTAssertEqual(conf.search, ["a.example", "b.example"], "the last of domain/search wins")
        XCTAssertEqual(conf.options, ["ndots:2", "timeout:1"])
    }

    func testRewriteRestoreAndRecoveryAfterACrash() throws {
        let path = directory + "/resolv.conf", backup = directory + "/state/resolv.conf.backup"
        try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
        let original = "# the host's own\nnameserver 192.0.2.53\nsearch corp.example\n"
        try original.write(toFile: path, atomically: false, encoding: .utf8)
        let config = OSDNSConfig(nameservers: [OSDNSConfig.quad100V4], searchDomains: ["tail.example", "corp.example"])

        let first = ResolvConfFile(path: path, backupPath: backup)
        XCTAssertEqual(first.hostResolvers(), [IPAddress("192.0.2.53")!])
        try first.apply(config)
        let written = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertTrue(written.hasPrefix(ResolvConfFile.header))
        XCTAssertEqual(ResolvConf(parsing: written).nameservers, [OSDNSConfig.quad100V4])
        XCTAssertEqual(ResolvConf(parsing: written).search, ["tail.example", "corp.example"])
        XCTAssertEqual(try String(contentsOfFile: backup, encoding: .utf8), original)
        // While Warren's file is in place, the host's resolvers are still the original ones (from the backup).
        XCTAssertEqual(first.hostResolvers(), [IPAddress("192.0.2.53")!])
        // Applying again does not overwrite the backup with Warren's own file.
        try first.apply(config)
        XCTAssertEqual(try String(contentsOfFile: backup, encoding: .utf8), original)

        // A crash: the next instance puts the host's file back before anything else.
        let second = ResolvConfFile(path: path, backupPath: backup)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), original)
        XCTAssertFalse(FileManager.default.fileExists(atPath: backup))
        try second.apply(config)
        try second.apply(nil)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), original, "restored byte for byte")
        XCTAssertFalse(FileManager.default.fileExists(atPath: backup))

        // The host changed its file while Warren ran (a DHCP client): the new one is what comes back.
        try second.apply(config)
        let renewed = "nameserver 198.51.100.53\n"
        try renewed.write(toFile: path, atomically: false, encoding: .utf8)
        try second.apply(config)
        try second.apply(nil)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), renewed)
    }

    func testWarrensFileWithoutItsBackupIsLeftAloneAndReported() throws {
        let path = directory + "/resolv.conf", backup = directory + "/backup"
        let ours = ResolvConfFile.header + "\nnameserver 100.100.100.100\n"
        try ours.write(toFile: path, atomically: false, encoding: .utf8)
        let warnings = WarningLog()
        _ = ResolvConfFile(path: path, backupPath: backup) { warnings.append($0) }
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), ours, "nothing to restore from: the file stays")
        XCTAssertEqual(warnings.lines.count, 1)
        XCTAssertTrue(warnings.lines.first?.contains("missing") ?? false, "\(warnings.lines)")
    }
}

private final class WarningLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ line: String) { lock.withLock { stored.append(line) } }
    var lines: [String] { lock.withLock { stored } }
}
