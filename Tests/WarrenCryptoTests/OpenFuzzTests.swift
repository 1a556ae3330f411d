import XCTest
import WarrenTestSupport
@testable import WarrenCrypto

/// Sealed messages arrive from the network: opening mutated input must throw, never crash, and
/// must never accept anything but the original.
final class OpenFuzzTests: XCTestCase {
    private let key = [UInt8](0..<32)
    private let nonce = [UInt8](100..<124)

    func testSecretBoxOpenOnMutatedInput() throws {
        let message = Array("disco ping from a peer".utf8)
        let sealed = try NaClSecretBox.seal(message, key: key, nonce: nonce)
        var accepted = 0
        MutationFuzzer(seeds: [sealed, []], iterations: 3_000, maximumLength: 512).run { input in
            if let opened = try? NaClSecretBox.open(input, key: key, nonce: nonce) {
                XCTAssertEqual(input, sealed)
                XCTAssertEqual(opened, message)
                accepted += 1
            }
        }
        XCTAssertGreaterThanOrEqual(accepted, 1)
    }

    func testXChaChaOpenOnMutatedInput() throws {
        let message = Array("cookie".utf8)
        let aad = [UInt8](repeating: 7, count: 16)
        let sealed = try XChaCha20Poly1305.seal(message, key: key, nonce: nonce, authenticating: aad)
        var accepted = 0
        MutationFuzzer(seeds: [sealed, []], iterations: 3_000, maximumLength: 512).run { input in
            if let opened = try? XChaCha20Poly1305.open(input, key: key, nonce: nonce, authenticating: aad) {
                XCTAssertEqual(input, sealed)
                XCTAssertEqual(opened, message)
                accepted += 1
            }
        }
        XCTAssertGreaterThanOrEqual(accepted, 1)
    }
}
