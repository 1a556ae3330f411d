import XCTest

final class WarrenNodeTestsPlaceholder: XCTestCase {}
