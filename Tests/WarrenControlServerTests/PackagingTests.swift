// The Debian package: scripts/package-deb builds it from the debug binaries next to the tests (uncompressed, with
// --unbundled-swift-runtime since a debug build loads the toolchain's Swift runtime), and it is installed into a
// throwaway root with dpkg itself: `dpkg --root=DIR --force-script-chrootless`, so dpkg unpacks, records and
// configures the package in DIR and runs the real maintainer scripts unchrooted with DPKG_ROOT=DIR (they create the
// user with useradd/groupadd --prefix DIR and enable units with deb-systemd-helper, which honours DPKG_ROOT). That
// exercises what `apt install` does without touching the host and without a chroot (which would need a whole
// Debian inside DIR). Then the files, the user, the enabled units, the completions and the configuration are
// checked, the units pass `systemd-analyze verify --root=DIR` (the host's own unit files and /bin/kill are copied
// into DIR first, standing for the systemd and procps packages), a broken copy of a unit does not, and a purge takes
// everything away again. Needs root (useradd, chown); the throwaway root is /tmp/wcpkg-* and is removed afterwards.

import Foundation
import XCTest

final class PackagingTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = "/tmp/wcpkg-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// Runs a program; its status and its standard output and error together.
    @discardableResult
    func run(_ arguments: [String], environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: arguments[0].hasPrefix("/") ? arguments[0] : "/usr/bin/env")
        process.arguments = arguments[0].hasPrefix("/") ? Array(arguments.dropFirst()) : arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// The directory of the debug binaries (where the tests are built).
    func binaryDirectory() throws -> String {
        var candidate = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            if ["warren-control", "warren-derp", "warrend", "warren"].allSatisfy({
                FileManager.default.isExecutableFile(atPath: candidate.appendingPathComponent($0).path)
            }) {
                return candidate.path
            }
            candidate = candidate.deletingLastPathComponent()
        }
        throw XCTSkip("warren-control, warren-derp, warrend and warren are not built next to the tests; run `swift build` first")
    }

    func requireRootAndTools() throws {
        guard getuid() == 0 else {
            throw XCTSkip("PackagingTests install the package with dpkg --root and useradd --prefix, which need root")
        }
        for tool in ["/usr/bin/dpkg-deb", "/usr/bin/dpkg", "/usr/bin/systemd-analyze", "/usr/sbin/useradd", "/usr/bin/deb-systemd-helper"] {
            XCTAssertTrue(FileManager.default.isExecutableFile(atPath: tool), "\(tool) is missing: run scripts/setup")
        }
    }

    /// An empty root dpkg can install into: its database, and /etc/passwd, group, shadow and gshadow with root alone.
    func makeThrowawayRoot(_ root: String) throws {
        let fm = FileManager.default
        for path in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "etc", "bin", "usr/lib/systemd"] {
            try fm.createDirectory(atPath: root + "/" + path, withIntermediateDirectories: true)
        }
        fm.createFile(atPath: root + "/var/lib/dpkg/status", contents: Data())
        try "root:x:0:0:root:/root:/bin/bash\n".write(toFile: root + "/etc/passwd", atomically: true, encoding: .utf8)
        try "root:x:0:\n".write(toFile: root + "/etc/group", atomically: true, encoding: .utf8)
        try "root:*:19000:0:99999:7:::\n".write(toFile: root + "/etc/shadow", atomically: true, encoding: .utf8)
        try "root:*::\n".write(toFile: root + "/etc/gshadow", atomically: true, encoding: .utf8)
    }

    func dpkg(_ root: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try run(["/usr/bin/dpkg", "--root=\(root)", "--log=\(root)/var/log/dpkg.log", "--force-script-chrootless",
                 "--force-depends"] + arguments)
    }

    func testThePackageBuildsInstallsIntoAThrowawayRootAndItsUnitsVerify() throws {
        try requireRootAndTools()
        let bin = try binaryDirectory()
        let fm = FileManager.default

        // Build.
        let built = try run([Self.repository + "/scripts/package-deb", "--bin-dir", bin, "--output", directory + "/out",
                             "--compression", "none", "--unbundled-swift-runtime"])
        XCTAssertEqual(built.status, 0, built.output)
        let version = try run([bin + "/warren-control", "version"]).output.split(separator: "\n").first?
            .replacingOccurrences(of: "warren-control ", with: "") ?? "?"
        let arch = try run(["/usr/bin/dpkg", "--print-architecture"]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        let deb = directory + "/out/warren_\(version)_\(arch).deb"
        XCTAssertTrue(built.output.contains(deb), built.output)
        XCTAssertTrue(fm.fileExists(atPath: deb))

        // Its control file names the libraries' packages and the maintainer scripts are there.
        let control = try run(["/usr/bin/dpkg-deb", "--field", deb]).output
        XCTAssertTrue(control.contains("Package: warren\n"), control)
        XCTAssertTrue(control.contains("Version: \(version)\n"), control)
        for dependency in ["libc6", "libsqlite3-0", "libzstd1", "passwd"] {
            XCTAssertTrue(control.contains(dependency), "Depends lacks \(dependency): \(control)")
        }
        let contents = try run(["/usr/bin/dpkg-deb", "--contents", deb]).output
        for path in ["./usr/bin/warren-control", "./usr/bin/warren-derp", "./usr/bin/warren", "./usr/sbin/warrend",
                     "./lib/systemd/system/warren-control.service", "./lib/systemd/system/warren-derp.service",
                     "./lib/systemd/system/warrend.service", "./etc/warren/control.yaml", "./etc/default/warren-derp",
                     "./etc/default/warrend", "./usr/share/bash-completion/completions/warren-control",
                     "./usr/share/zsh/vendor-completions/_warren", "./usr/share/fish/vendor_completions.d/warrend.fish",
                     "./usr/share/doc/warren/copyright"] {
            XCTAssertTrue(contents.contains(" \(path)\n") || contents.contains(" \(path) ->"), "\(path) not in the package")
        }
        XCTAssertFalse(contents.contains("warren/warren "), "files must belong to root: \(contents.prefix(400))")

        // Install.
        let root = directory + "/root"
        try makeThrowawayRoot(root)
        let installed = try dpkg(root, ["-i", deb])
        XCTAssertEqual(installed.status, 0, installed.output)
        XCTAssertTrue(try run(["/usr/bin/dpkg-query", "--admindir=\(root)/var/lib/dpkg", "-W", "-f=${Status}", "warren"])
            .output.contains("install ok installed"))

        // The programs, runnable from where they were installed.
        for program in ["usr/bin/warren-control", "usr/bin/warren-derp", "usr/bin/warren", "usr/sbin/warrend"] {
            XCTAssertTrue(fm.isExecutableFile(atPath: root + "/" + program), program)
        }
        XCTAssertTrue(try run([root + "/usr/bin/warren-control", "version"]).output.hasPrefix("warren-control \(version)"))

        // The user and group, a system account that cannot log in.
        let passwd = try String(contentsOfFile: root + "/etc/passwd", encoding: .utf8)
        let user = try XCTUnwrap(passwd.split(separator: "\n").first { $0.hasPrefix("warren:") }, passwd).split(separator: ":")
        XCTAssertLessThan(try XCTUnwrap(Int(user[2])), 1000, "not a system uid")
        XCTAssertEqual(user[5], "/var/lib/warren")
        XCTAssertEqual(user[6], "/usr/sbin/nologin")
        let group = try String(contentsOfFile: root + "/etc/group", encoding: .utf8)
        let gid = try XCTUnwrap(group.split(separator: "\n").first { $0.hasPrefix("warren:") }?.split(separator: ":")[2])
        XCTAssertEqual(user[3], gid)

        // The configuration: root:warren 0640 (readable by the service, not by others), and valid.
        let attributes = try fm.attributesOfItem(atPath: root + "/etc/warren/control.yaml")
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o640)
        XCTAssertEqual((attributes[.groupOwnerAccountID] as? NSNumber)?.intValue, Int(gid))
        XCTAssertEqual((attributes[.ownerAccountID] as? NSNumber)?.intValue, 0)
        let configtest = try run([root + "/usr/bin/warren-control", "configtest", "--config", root + "/etc/warren/control.yaml",
                                  "--state-dir", directory + "/state"])
        XCTAssertEqual(configtest.status, 0, configtest.output)
        XCTAssertTrue(configtest.output.contains("warnings: 0"), configtest.output)

        // Enabled: warren-control and warrend; warren-derp waits for its flags.
        let wants = root + "/etc/systemd/system/multi-user.target.wants"
        XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: wants + "/warren-control.service"),
                       "/lib/systemd/system/warren-control.service")
        XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: wants + "/warrend.service"), "/lib/systemd/system/warrend.service")
        XCTAssertFalse(fm.fileExists(atPath: wants + "/warren-derp.service"))

        // Completions, generated from each program's options.
        let bash = root + "/usr/share/bash-completion/completions/warren-control"
        XCTAssertEqual(try run(["/bin/bash", "-n", bash]).status, 0)
        let bashText = try String(contentsOfFile: bash, encoding: .utf8)
        XCTAssertTrue(bashText.contains("configtest") && bashText.contains("preauthkeys"), "bash completion lacks subcommands")
        XCTAssertTrue(try String(contentsOfFile: root + "/usr/share/zsh/vendor-completions/_warren", encoding: .utf8)
            .hasPrefix("#compdef warren"))
        let fish = try String(contentsOfFile: root + "/usr/share/fish/vendor_completions.d/warrend.fish", encoding: .utf8)
        XCTAssertTrue(fish.contains("complete -c 'warrend'") && fish.contains("-l 'state-dir'"), "fish completion lacks --state-dir")

        // The units: hardened as documented, and systemd-analyze verify finds nothing to say.
        let controlUnit = try String(contentsOfFile: root + "/lib/systemd/system/warren-control.service", encoding: .utf8)
        for line in ["User=warren", "AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                     "NoNewPrivileges=true", "ProtectSystem=strict", "StateDirectory=warren"] {
            XCTAssertTrue(controlUnit.contains("\n\(line)\n"), "warren-control.service lacks \(line)")
        }
        let derpUnit = try String(contentsOfFile: root + "/lib/systemd/system/warren-derp.service", encoding: .utf8)
        XCTAssertTrue(derpUnit.contains("\nUser=warren\n") && derpUnit.contains("\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"))
        let nodeUnit = try String(contentsOfFile: root + "/lib/systemd/system/warrend.service", encoding: .utf8)
        XCTAssertTrue(nodeUnit.contains("CAP_NET_ADMIN") && nodeUnit.contains("DeviceAllow=/dev/net/tun rw"))

        // The host's systemd units (sysinit.target, ...) and /bin/kill stand for those packages in the root.
        XCTAssertEqual(try run(["/bin/cp", "-a", "/lib/systemd/system", root + "/usr/lib/systemd/"]).status, 0)
        XCTAssertEqual(try run(["/bin/cp", "/bin/kill", root + "/bin/kill"]).status, 0)
        for unit in ["warren-control.service", "warren-derp.service", "warrend.service"] {
            let verify = try run(["/usr/bin/systemd-analyze", "verify", "--root=\(root)", unit])
            XCTAssertEqual(verify.status, 0, "\(unit): \(verify.output)")
            XCTAssertEqual(verify.output, "", "\(unit): \(verify.output)")
        }
        // The same check fails on a broken unit: a misspelled directive, and a program that is not there.
        try controlUnit.replacingOccurrences(of: "ProtectSystem=strict", with: "ProtectSystm=strict")
            .write(toFile: root + "/etc/systemd/system/broken-key.service", atomically: true, encoding: .utf8)
        let brokenKey = try run(["/usr/bin/systemd-analyze", "verify", "--root=\(root)", "broken-key.service"])
        XCTAssertTrue(brokenKey.output.contains("ProtectSystm"), brokenKey.output)
        try controlUnit.replacingOccurrences(of: "ExecStart=/usr/bin/warren-control", with: "ExecStart=/usr/bin/warren-controll")
            .write(toFile: root + "/etc/systemd/system/broken-exec.service", atomically: true, encoding: .utf8)
        let brokenExec = try run(["/usr/bin/systemd-analyze", "verify", "--root=\(root)", "broken-exec.service"])
        XCTAssertNotEqual(brokenExec.status, 0, brokenExec.output)

        // Purge: the files, the enablement and the user go.
        let purged = try dpkg(root, ["--purge", "warren"])
        XCTAssertEqual(purged.status, 0, purged.output)
        for path in ["usr/bin/warren-control", "usr/sbin/warrend", "lib/systemd/system/warren-control.service",
                     "etc/warren/control.yaml", "etc/default/warrend"] {
            XCTAssertFalse(fm.fileExists(atPath: root + "/" + path), "\(path) left after purge")
        }
        XCTAssertNil(try? fm.destinationOfSymbolicLink(atPath: wants + "/warren-control.service"))
        XCTAssertFalse(try String(contentsOfFile: root + "/etc/passwd", encoding: .utf8).contains("warren:"))
        XCTAssertFalse(try String(contentsOfFile: root + "/etc/group", encoding: .utf8).contains("warren:"))
    }

    /// The script refuses what it cannot package: a directory without the programs, a bad version, and (without
    /// --unbundled-swift-runtime) binaries that load the Swift runtime from the toolchain.
    func testPackageDebRefusesWhatItCannotPackage() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/dpkg-deb") else {
            if getuid() == 0 { XCTFail("dpkg-deb is missing") }
            throw XCTSkip("dpkg-deb is not installed")
        }
        let script = Self.repository + "/scripts/package-deb"
        let empty = try run([script, "--bin-dir", directory, "--output", directory + "/out"])
        XCTAssertNotEqual(empty.status, 0)
        XCTAssertTrue(empty.output.contains("warren-control is missing"), empty.output)
        let bin = try binaryDirectory()
        let badVersion = try run([script, "--bin-dir", bin, "--version", "-1", "--output", directory + "/out"])
        XCTAssertNotEqual(badVersion.status, 0)
        XCTAssertTrue(badVersion.output.contains("not a Debian version"), badVersion.output)
        // A debug build loads libswiftCore.so from the toolchain, which no Debian package provides.
        let unbundled = try run([script, "--bin-dir", bin, "--output", directory + "/out", "--compression", "none"])
        XCTAssertNotEqual(unbundled.status, 0)
        XCTAssertTrue(unbundled.output.contains("--static-swift-stdlib"), unbundled.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/out/warren_0.1.0_amd64.deb"))
    }
}
