import XCTest

final class WarrenNetMapTestsPlaceholder: XCTestCase {}
