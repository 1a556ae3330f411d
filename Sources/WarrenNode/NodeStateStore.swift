// What the node keeps across restarts, in the state directory: the machine and node keys (the disco
// key is new each start, as Tailscale's is) and the user's preferences. One JSON file, written
// atomically (temporary file + rename), mode 0600.

import Foundation
import TailscaleKeys
import WarrenNetMap

public struct NodePersistedState: Codable, Sendable, Equatable {
    public var machineKey: MachinePrivate
    public var nodeKey: NodePrivate
    /// The node key before the last rotation (sent as OldNodeKey on re-login).
    public var oldNodeKey: NodePublic?
    /// The user's choices (`warren up` flags).
    public var prefs: Prefs
    /// Whether this node key is registered with the control server in `prefs.loginServer`.
    public var registered = false

    public init(machineKey: MachinePrivate, nodeKey: NodePrivate, prefs: Prefs) {
        self.machineKey = machineKey
        self.nodeKey = nodeKey
        self.prefs = prefs
    }
}

public enum NodeStateStoreError: Error, CustomStringConvertible {
    case unreadable(String, String)
    case unwritable(String, String)

    public var description: String {
        switch self {
        case .unreadable(let path, let why): return "cannot read node state \(path): \(why)"
        case .unwritable(let path, let why): return "cannot write node state \(path): \(why)"
        }
    }
}

public struct NodeStateStore: Sendable {
    public let directory: String
    public var path: String { directory + "/warrend.state" }

    public init(directory: String) { self.directory = directory }

    /// The stored state, or a new one (fresh keys) when there is none. A file that exists but cannot
    /// be parsed is an error: keys are never replaced silently.
    public func loadOrCreate() throws -> NodePersistedState {
        let fm = FileManager.default
        if fm.fileExists(atPath: path) {
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: path))
                return try JSONDecoder().decode(NodePersistedState.self, from: data)
            } catch {
                throw NodeStateStoreError.unreadable(path, "\(error)")
            }
        }
        var rng = SystemRandomNumberGenerator()
        let state = NodePersistedState(machineKey: .generate(using: &rng), nodeKey: .generate(using: &rng), prefs: Prefs(loginServer: ""))
        try save(state)
        return state
    }

    public func save(_ state: NodePersistedState) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(state)
            let temporary = path + ".tmp"
            FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600])
            guard rename(temporary, path) == 0 else { throw NodeStateStoreError.unwritable(path, String(cString: strerror(errno))) }
        } catch let error as NodeStateStoreError {
            throw error
        } catch {
            throw NodeStateStoreError.unwritable(path, "\(error)")
        }
    }
}
