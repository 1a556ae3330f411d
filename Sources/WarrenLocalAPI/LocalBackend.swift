/// What the daemon implements for the LocalAPI server. Every method may be called concurrently.
///
/// Throw `LocalAPIError` for answers the caller caused (the server sends its status and message: 400 bad input,
/// 404 unknown peer, 409 wrong state, ...); any other error becomes a 500 with its description.
public protocol LocalBackend: Sendable {
    /// The whole state (GET status).
    func status() async -> IPNStatus

    /// Applies the up/login settings and starts the node (POST up). Returns when the state is Running, or as soon as
    /// control gives an AuthURL (state NeedsLogin, `authURL` set), or NeedsMachineAuth. With `request.wait == false`,
    /// returns as soon as the login has started. The CLI then polls `status()` until Running.
    func up(_ request: UpRequest) async throws -> UpResponse

    /// Disconnects, keeping the login (POST down): state becomes Stopped.
    func down() async throws

    /// Expires the node key and forgets the login (POST logout): state becomes NeedsLogin.
    func logout() async throws

    /// One ping of `ip` (a Tailscale IP, already validated) of the given kind; `size` is the disco/TSMP payload size
    /// (0 = default). No pong within the backend's timeout is not an error: return a result with `err` set
    /// ("timeout waiting for ping reply" or similar). Throw `LocalAPIError(404, ...)` when no peer has that IP.
    func ping(ip: String, type: PingType, size: Int) async throws -> PingResult

    /// The node and user behind a Tailscale IP (`address` is "IP" or "IP:PORT", already validated); nil -> 404.
    func whois(_ address: String) async throws -> WhoIsResponse?

    /// Runs a network check (STUN to the DERP regions) now (GET netcheck).
    func netcheck() async throws -> NetcheckReport

    /// The exit node this node would pick now (GET suggest-exit-node); `LocalAPIError(404, ...)` when no
    /// peer offers one.
    func suggestExitNode() async throws -> ExitNodeSuggestion

    /// Resolves `name` (type `type`, "A" when empty) through MagicDNS as the host would (GET dns-query).
    func dnsQuery(name: String, type: String) async throws -> DNSQueryResponse

    /// MagicDNS and the host's DNS configuration (GET dns-status).
    func dnsStatus() async throws -> DNSStatus
}

/// An error answer chosen by the backend: HTTP status and message.
public struct LocalAPIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var message: String

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }

    public init(_ status: Int, _ message: String) { self.init(status: status, message: message) }

    public var description: String { message }
}
