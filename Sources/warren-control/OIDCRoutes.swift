// Sign-in with OIDC on the control listener: the login page (/register/<id> redirects to the provider) and the
// callback (/oidc/callback), wired to the engine's approval path. Set up once the server's URL is final (a
// listener on port 0 learns its port only when bound): until then, and without `oidc:`, the built-in page for an
// admin's approval answers.

import Foundation
import Logging
import Synchronization
import WarrenControlOIDC
import WarrenControlServer
import WarrenControlStore
import WarrenTailcfg

final class OIDCWiring: Sendable {
    let section: OIDCConfigSection?
    let store: any ControlStore
    let engine: ControlEngine
    let logger: Logger
    private let flow = Mutex<OIDCLoginFlow?>(nil)

    init(section: OIDCConfigSection?, store: any ControlStore, engine: ControlEngine, logger: Logger) {
        self.section = section
        self.store = store
        self.engine = engine
        self.logger = logger
    }

    /// Builds the relying party for the server's final URL and discovers the provider. With
    /// only_start_if_oidc_is_available (the default) a provider that cannot be discovered stops the start;
    /// otherwise it is logged and tried again at the first sign-in.
    func start(serverURL: String) async throws {
        guard let section else { return }
        let settings = section.settings(serverURL: serverURL)
        try settings.validate()
        // Started sign-ins live in the store: any instance on the same database can finish them.
        let party = OIDCRelyingParty(settings: settings, store: store, logger: logger)
        let engine = engine
        let hooks = OIDCLoginHooks(
            isWaiting: { id in await engine.isWaitingLogin(id: id) },
            approve: { id, user, expiry in
                let wanted: TailcfgTime??
                switch expiry {
                case .serverDefault: wanted = nil
                case .never: wanted = .some(nil)
                case .at(let date): wanted = .some(TailcfgTime(date: date))
                }
                let node = try await engine.approveInteractiveLogin(id: id, userID: user.id.rawValue, keyExpiry: wanted)
                return OIDCApprovedNode(id: node.id, name: node.givenName)
            })
        do {
            try await party.discover()
        } catch {
            if section.onlyStartIfAvailable {
                throw OIDCError(error.kind, "the OIDC provider \(settings.issuer) is not available: \(error.message) "
                                + "(set oidc.only_start_if_oidc_is_available: false to start without it)")
            }
            logger.warning("OIDC provider not available; sign-ins will try again", metadata: ["issuer": "\(settings.issuer)", "error": "\(error)"])
        }
        flow.withLock { $0 = OIDCLoginFlow(relyingParty: party, store: store, hooks: hooks, expiry: section.expiryRule, logger: logger) }
        logger.info("sign-in with OIDC enabled", metadata: ["issuer": "\(settings.issuer)", "callback": "\(settings.redirectURL)"])
    }

    var current: OIDCLoginFlow? { flow.withLock { $0 } }

    /// The routes for the control listener: the callback, then `next`.
    func routes(next: any PlainHTTPRoutes) -> any PlainHTTPRoutes { CallbackRoutes(wiring: self, next: next) }

    /// The login page hook (GET /register/<id>).
    var loginPage: any PlainHTTPRoutes { LoginPage(wiring: self) }

    static func response(_ page: OIDCPage) -> PlainHTTPResponse {
        PlainHTTPResponse(status: page.status, contentType: page.contentType, body: Array(page.body.utf8), headers: page.headers)
    }

    struct CallbackRoutes: PlainHTTPRoutes {
        let wiring: OIDCWiring
        let next: any PlainHTTPRoutes

        func handle(_ request: PlainHTTPRequest) async -> PlainHTTPResponse? {
            guard request.path == OIDCLoginFlow.callbackPath else { return await next.handle(request) }
            guard let flow = wiring.current else {
                return PlainHTTPResponse(status: 404, text: "sign-in with OIDC is not configured on this server\n")
            }
            guard request.method == "GET" else {
                return PlainHTTPResponse(status: 405, body: Array("only GET\n".utf8), headers: ["Allow": "GET"])
            }
            return OIDCWiring.response(await flow.callback(query: request.query, cookieHeader: request.header("Cookie")))
        }
    }

    struct LoginPage: PlainHTTPRoutes {
        let wiring: OIDCWiring

        func handle(_ request: PlainHTTPRequest) async -> PlainHTTPResponse? {
            guard let flow = wiring.current, request.method == "GET", request.path.hasPrefix("/register/") else { return nil }
            let id = String(request.path.dropFirst("/register/".count))
            guard !id.isEmpty, let page = await flow.loginPage(id: id) else { return nil }
            return OIDCWiring.response(page)
        }
    }
}
