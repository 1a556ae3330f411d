import XCTest

final class WarrenNodeControlTestsPlaceholder: XCTestCase {}
