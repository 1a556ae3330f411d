// The ts2021 client these tests drive lives in WarrenControlClient (shared with warren-control-bench);
// these are the names the tests were written with.

import WarrenControlClient

typealias TestControlClient = ControlClient
typealias TestClientError = ControlClientError
typealias TestGenerator = SeededKeyGenerator
