// Wiring of the admin API into `serve`. Serve.swift needs three lines:
//
//   let admin = try await AdminWiring.start(store: store, engine: engine, configuration: configuration, stateDir: stateDir)
//   … ControlServerOptions(host: host, port: port, extraRoutes: admin.routes) …   // /api/v1/* on --listen, API key needed
//   … services: [.init(service: server), .init(service: admin.server)] …           // the root-only socket, closed on shutdown

import Foundation
import WarrenControlAdmin
import WarrenControlServer
import WarrenControlStore
import WarrenListenerGuard

enum AdminWiring {
    /// Starts the admin API on `<stateDir>/admin.sock` (mode 0600 in the 0700 state directory) with hooks that make the
    /// engine re-read what the admin side changed and push it to the connected nodes.
    /// `policyFile`: the server runs in policy file mode (`policy_file`), and `policy set` is refused.
    /// `socketPath`/`socketMode`: headscale's `unix_socket` and `unix_socket_permission` (default `<stateDir>/admin.sock`, 0600).
    static func start(store: any ControlStore, engine: ControlEngine, configuration: ControlConfiguration, stateDir: String,
                      socketPath: String? = nil, socketMode: mode_t = 0o600,
                      policyFile: String? = nil, limits: ListenerLimits = AdminHTTPServer.defaultLimits,
                      nodesChanged: @escaping @Sendable () -> Void = {})
        async throws -> (server: AdminHTTPServer, routes: AdminRoutes)
    {
        let policy = AdminPolicyHooks(
            mode: policyFile.map { .file(path: $0) } ?? .database,
            check: { text in
                do {
                    _ = try await engine.checkPolicy(text)
                } catch let rejection as PolicyRejection {
                    throw AdminPolicyRejection(rejection.problems.map(\.description))
                }
            },
            apply: { text, version in try await engine.putStoredPolicyInForce(text: text, version: version) },
            // The text in force (read at start), not the file as it may have been edited since.
            fileText: { await engine.compiledPolicy?.policy?.source })
        let hooks = AdminHooks(
            changed: { change in
                switch change {
                case .nodesChanged(let ids), .nodesRemoved(let ids):
                    // reloadNode re-reads the node, or drops it (and tells its peers) when the store no longer has it.
                    for id in ids { _ = try? await engine.reloadNode(id: id.rawValue) }
                    // The embedded relay disconnects a node deleted or expired now, not at its next login.
                    nodesChanged()
                case .usersChanged:
                    try? await engine.reloadUsers()
                case .registrationApproved(let registrationID, _):
                    // The waiting register request finds the approval in the store (PendingRegistration.approvedNodeID):
                    // wake it.
                    await engine.pendingLoginApproved(id: registrationID)
                case .registrationRejected(let registrationID):
                    // The store's record is gone; the waiting register request is answered with a refusal.
                    await engine.pendingLoginRejected(id: registrationID)
                }
            },
            onlineNodes: {
                var online: Set<NodeID> = []
                for node in await engine.allNodes() where await engine.isOnlineAnywhere(node.id) { online.insert(NodeID(node.id)) }
                return online
            },
            policy: policy)
        let expiry = configuration.nodeKeyExpiry.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
        let api = AdminAPI(
            store: store, allocator: try AddressAllocator(ipv4Prefix: configuration.ipv4Prefix, ipv6Prefix: configuration.ipv6Prefix),
            nodeKeyExpiry: expiry, hooks: hooks)
        let path = socketPath ?? AdminClient.socketPath(stateDirectory: stateDir)
        let server = try await AdminHTTPServer.start(api: api, socketPath: path, limits: limits)
        // The server binds it 0600; a headscale configuration may open it to a group (whoever connects is an admin).
        if socketMode != 0o600 { chmod(path, socketMode) }
        return (server, AdminRoutes(api: api))
    }
}

/// Serves /api/v1/* on the control server's own HTTP listener (network transport: API key required).
struct AdminRoutes: PlainHTTPRoutes {
    let api: AdminAPI

    func handle(_ request: PlainHTTPRequest) async -> PlainHTTPResponse? {
        guard AdminAPI.serves(path: request.path) else { return nil }
        // The listener keeps at most 1 MiB of a body: a longer one must be refused whole, never served cut short.
        let declared = request.header("Content-Length").flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        if (declared ?? 0) > 1 << 20 || request.body.count >= 1 << 20 {
            return PlainHTTPResponse(status: 413, contentType: "application/json",
                                     body: Array(#"{"code":"invalid","error":"request body larger than 1 MiB"}"#.utf8))
        }
        if let declared, declared != request.body.count {
            return PlainHTTPResponse(status: 400, contentType: "application/json",
                                     body: Array(#"{"code":"invalid","error":"the request body does not match its Content-Length"}"#.utf8))
        }
        let (_, query) = AdminRequest.splitTarget(request.query.map { "?" + $0 } ?? "")
        let response = await api.handle(
            AdminRequest(method: request.method, path: request.path, query: query, authorization: request.header("Authorization"),
                         body: request.body),
            via: .network)
        return PlainHTTPResponse(status: response.status, contentType: response.contentType, body: response.body,
                                 headers: response.headers)
    }
}
