import XCTest

final class WarrenLocalAPITestsPlaceholder: XCTestCase {}
