import XCTest
@testable import WarrenDNS
