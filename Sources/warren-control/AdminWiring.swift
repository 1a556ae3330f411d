// Wiring of the admin API into `serve` (called from Serve.swift; kept here so the two helpers' files stay apart).
//
//   let store = try SQLiteControlStore(path: stateDir + "/control.sqlite")
//   let api = AdminAPI(store: store, allocator: allocator, nodeKeyExpiry: …, hooks: AdminHooks(changed: …, onlineNodes: …))
//   let adminServer = try await AdminWiring.startSocket(api: api, stateDir: stateDir)   // a Service for the ServiceGroup
//   ControlServerOptions(…, extraRoutes: AdminRoutes(api: api))                         // /api/v1/* on --listen, API key needed

import Foundation
import WarrenControlAdmin
import WarrenControlServer

enum AdminWiring {
    /// Starts the admin API on `<stateDir>/admin.sock` (mode 0600; the state directory itself is 0700).
    static func startSocket(api: AdminAPI, stateDir: String) async throws -> AdminHTTPServer {
        try await AdminHTTPServer.start(api: api, socketPath: AdminClient.socketPath(stateDirectory: stateDir))
    }
}

/// Serves /api/v1/* on the control server's own HTTP listener (network transport: API key required).
struct AdminRoutes: PlainHTTPRoutes {
    let api: AdminAPI

    func handle(_ request: PlainHTTPRequest) async -> PlainHTTPResponse? {
        guard AdminAPI.serves(path: request.path) else { return nil }
        let (_, query) = AdminRequest.splitTarget(request.query.map { "?" + $0 } ?? "")
        let response = await api.handle(
            AdminRequest(method: request.method, path: request.path, query: query, authorization: request.header("Authorization"),
                         body: request.body),
            via: .network)
        return PlainHTTPResponse(status: response.status, contentType: response.contentType, body: response.body)
    }
}
