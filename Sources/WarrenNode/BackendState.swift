// The node's backend state, as tailscaled reports it (ipn.State): what the user sees in `warren
// status` and what `warren up` waits for. Pure: events in, state out.

import WarrenLocalAPI

/// Folds what the daemon learns into the backend state.
///
/// - Not wanting to run (`warren down`) is Stopped, whatever the login.
/// - Without a login: NeedsLogin (with the URL once control sent one).
/// - Logged in but not approved: NeedsMachineAuth.
/// - Logged in, approved and wanting to run: Starting until the first network map, then Running.
public struct BackendStateMachine: Sendable, Hashable {
    public enum Login: Sendable, Hashable {
        case none
        case needsLogin(authURL: String?)
        case needsMachineAuth
        case loggedIn
    }

    public enum Event: Sendable, Hashable {
        case wantRunning(Bool)
        case login(Login)
        case networkMapReceived
        case controlLost
        case loggedOut
    }

    public private(set) var wantRunning: Bool
    public private(set) var login: Login = .none
    public private(set) var haveNetworkMap = false

    public init(wantRunning: Bool) { self.wantRunning = wantRunning }

    public var state: BackendState {
        if case .none = login, !wantRunning { return .noState }
        if !wantRunning {
            if case .loggedIn = login { return .stopped }
            return .needsLogin
        }
        switch login {
        case .none, .needsLogin: return .needsLogin
        case .needsMachineAuth: return .needsMachineAuth
        case .loggedIn: return haveNetworkMap ? .running : .starting
        }
    }

    public var authURL: String? {
        if case .needsLogin(let url) = login { return url }
        return nil
    }

    /// Applies an event; returns whether the state (or auth URL) changed.
    @discardableResult
    public mutating func apply(_ event: Event) -> Bool {
        let before = (state, authURL)
        switch event {
        case .wantRunning(let want):
            wantRunning = want
            // Down drops the engines' state: the next up waits for a fresh map.
            if !want { haveNetworkMap = false }
        case .login(let l):
            if case .loggedIn = l {} else { haveNetworkMap = false }
            login = l
        case .networkMapReceived:
            if case .loggedIn = login { haveNetworkMap = true }
        case .controlLost:
            // Tunnels keep working without control: a node that had a map stays Running.
            break
        case .loggedOut:
            login = .needsLogin(authURL: nil)
            haveNetworkMap = false
        }
        return before != (state, authURL)
    }
}
