// GET /health on the control listener, as headscale answers it: the store's health check (a read in a transaction
// and the database file itself), `{"status":"pass"}` with 200, or `{"status":"fail"}` with 500 and the reason logged.
// Every other request goes on to the next routes.

import Logging
import WarrenControlServer
import WarrenControlStore

struct HealthRoutes: PlainHTTPRoutes {
    let store: any ControlStore
    let next: any PlainHTTPRoutes
    let logger: Logger

    func handle(_ request: PlainHTTPRequest) async -> PlainHTTPResponse? {
        guard request.path == "/health", request.method == "GET" else {
            return await next.handle(request)
        }
        do {
            try await store.checkHealth()
            return PlainHTTPResponse(status: 200, contentType: "application/health+json; charset=utf-8",
                                     body: Array(#"{"status":"pass"}"#.utf8))
        } catch {
            logger.error("health check failed: \(error)")
            return PlainHTTPResponse(status: 500, contentType: "application/health+json; charset=utf-8",
                                     body: Array(#"{"status":"fail"}"#.utf8))
        }
    }
}
