// Self-signed certificates and their sha256-raw pins, checked against Python's `cryptography`.

import Foundation
import WarrenDERPTransport
import XCTest

final class DERPCertificateTests: XCTestCase {
    func testSelfSignedCertificateNamesAndPin() throws {
        let certificate = try DERPCertificate.selfSigned(hostnames: ["127.0.0.1", "::1", "derp.example"])
        XCTAssertEqual(try certificate.names(), ["127.0.0.1", "::1", "derp.example"])
        XCTAssertTrue(certificate.pin.hasPrefix("sha256-raw:"))
        XCTAssertEqual(certificate.pin.count, "sha256-raw:".count + 64)
        XCTAssertNoThrow(try certificate.serverTLSConfiguration())
        let again = try DERPCertificate(certificatePEM: certificate.certificatePEM, privateKeyPEM: certificate.privateKeyPEM)
        XCTAssertEqual(again.pin, certificate.pin)
        XCTAssertNotEqual(try DERPCertificate.selfSigned(hostnames: ["127.0.0.1"]).pin, certificate.pin)
    }

    func testStateDirectoryKeepsTheCertificate() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("wdp-cert-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try DERPCertificate.loadOrCreateSelfSigned(directory: directory, hostnames: ["127.0.0.1"])
        let second = try DERPCertificate.loadOrCreateSelfSigned(directory: directory, hostnames: ["127.0.0.1"])
        XCTAssertEqual(first.pin, second.pin)
        let keyPath = (directory as NSString).appendingPathComponent("derp-key.pem")
        let mode = try FileManager.default.attributesOfItem(atPath: keyPath)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
        // A host name the kept certificate lacks makes a new one.
        let third = try DERPCertificate.loadOrCreateSelfSigned(directory: directory, hostnames: ["127.0.0.1", "relay.lab"])
        XCTAssertNotEqual(third.pin, first.pin)
    }

    func testLoadRejectsGarbage() {
        XCTAssertThrowsError(try DERPCertificate(certificatePEM: "not a certificate", privateKeyPEM: "nor a key"))
    }

    func testPinAndNamesAgreeWithPythonCryptography() throws {
        let certificate = try DERPCertificate.selfSigned(hostnames: ["127.0.0.1", "derp.example"])
        let script = """
            import sys
            try:
                from cryptography import x509
                from cryptography.hazmat.primitives import hashes
            except ImportError:
                print("SKIP"); sys.exit(0)
            cert = x509.load_pem_x509_certificate(sys.stdin.buffer.read())
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            print("sha256-raw:" + cert.fingerprint(hashes.SHA256()).hex())
            print(",".join(sorted([str(n) for n in names.get_values_for_type(x509.IPAddress)] + names.get_values_for_type(x509.DNSName))))
            print(cert.signature_hash_algorithm.name)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        do { try process.run() } catch { throw XCTSkip("python3 is not available: \(error)") }
        input.fileHandleForWriting.write(Data(certificate.certificatePEM.utf8))
        try input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let lines = text.split(separator: "\n").map(String.init)
        if lines.first == "SKIP" { throw XCTSkip("the Python module cryptography is not installed") }
        XCTAssertEqual(process.terminationStatus, 0)
        XCTAssertEqual(lines, [certificate.pin, "127.0.0.1,derp.example", "sha256"])
    }
}
