import XCTest

final class WarrenNodeInteropTestsPlaceholder: XCTestCase {}
