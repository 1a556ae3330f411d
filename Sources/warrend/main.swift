// warrend: the node daemon. Parses its flags, builds the node (WarrenNode) and runs it until SIGTERM
// or SIGINT, which remove the TUN device, its addresses and routes. `warren` talks to it over the
// LocalAPI socket.

import ArgumentParser
import Dispatch
import Foundation
import Logging
import WarrenNode

@main
struct Warrend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "warrend",
        abstract: "The Warren node daemon: joins a tailnet and carries its traffic through a TUN device.",
        discussion: "Run as root. Log in with `warren up --login-server URL [--auth-key KEY]`.")

    @Option(name: .customLong("state-dir"), help: "Where keys and preferences are kept.")
    var stateDirectory = "/var/lib/warrend"

    @Option(name: .long, help: "The LocalAPI's unix socket.")
    var socket = "/var/run/warrend/warrend.sock"

    @Option(name: .long, help: "The TUN interface's name.")
    var tun = "warren0"

    @Option(name: .long, help: "The UDP port for WireGuard and disco (0: any).")
    var port: UInt16 = 41641

    @Option(name: .long, help: "The TUN's MTU (Tailscale's is 1280, which fits any path; more only where every path carries it).")
    var mtu = 1280

    @Flag(name: .long, help: "Log more.")
    var verbose = false

    func validate() throws {
        guard !tun.isEmpty, tun.utf8.count < 16, tun.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
            throw ValidationError("invalid interface name \"\(tun)\": 1 to 15 letters, digits, '-', '_' or '.'")
        }
        guard (576...9000).contains(mtu) else { throw ValidationError("--mtu must be between 576 and 9000") }
        guard !stateDirectory.isEmpty else { throw ValidationError("--state-dir must not be empty") }
        guard !socket.isEmpty else { throw ValidationError("--socket must not be empty") }
    }

    func run() async throws {
        let level: Logger.Level = verbose ? .debug : .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "warrend")
        guard geteuid() == 0 else {
            FileHandle.standardError.write(Data("warrend: must run as root (it creates a TUN device and routes)\n".utf8))
            throw ExitCode(1)
        }
        var options = NodeOptions(stateDirectory: stateDirectory, socketPath: socket)
        options.tunName = tun
        options.port = port
        options.mtu = mtu
        let node: WarrenNode
        do {
            node = try WarrenNode(options: options, logger: logger)
            try await node.start()
        } catch {
            FileHandle.standardError.write(Data("warrend: \(error)\n".utf8))
            throw ExitCode(1)
        }
        await Self.waitForTermination()
        logger.info("shutting down")
        await node.shutdown()
    }

    /// Returns on SIGTERM or SIGINT.
    static func waitForTermination() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let once = OnceFlag()
            var sources: [DispatchSourceSignal] = []
            for sig in [SIGTERM, SIGINT] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler {
                    if once.claim() { continuation.resume() }
                }
                source.resume()
                sources.append(source)
            }
            SignalSources.keep(sources)
        }
    }
}

/// Keeps the signal sources alive for the life of the process.
enum SignalSources {
    nonisolated(unsafe) static var kept: [DispatchSourceSignal] = []
    static func keep(_ sources: [DispatchSourceSignal]) { kept = sources }
}

final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func claim() -> Bool {
        lock.withLock {
            if done { return false }
            done = true
            return true
        }
    }
}
