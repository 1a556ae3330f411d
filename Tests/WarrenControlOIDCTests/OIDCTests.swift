import XCTest
@testable import WarrenControlOIDC
