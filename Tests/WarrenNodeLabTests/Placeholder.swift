import XCTest

final class WarrenNodeLabTestsPlaceholder: XCTestCase {}
