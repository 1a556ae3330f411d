import XCTest

final class DiscoProtocolTestsPlaceholder: XCTestCase {}
