import Foundation
import WireGuardDevice
import WireGuardUAPIServer
#if canImport(Glibc)
import Glibc
#endif

/// Wires the TUN interface, the sockets, the device and the configuration socket together, and
/// runs them until a signal, the interface's deletion or the socket file's removal.
final class InterfaceRunner {
    let device: WireGuardDevice
    let server: UAPIServer
    let logger: DeviceLogger

    init(interface: String, logger: DeviceLogger) throws {
        self.logger = logger
        // Signals go to one waiting thread: block them before any thread starts.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        signal(SIGPIPE, SIG_IGN)

        let tun = try LinuxTUNInterface(name: interface)
        device = WireGuardDevice(tun: tun, bind: LinuxBind(), logger: logger)
        let listener = try UAPIListener.open(interfaceName: tun.name)
        server = UAPIServer(listener: listener, handler: device)
        try device.start()
        logger.verbose("Device started")
    }

    /// Runs until the device stops; returns the process exit status.
    func run() -> Int32 {
        let device = self.device
        let logger = self.logger
        server.start { reason in
            if reason != .stopped {
                logger.verbose("UAPI listener stopped: \(reason)")
                device.stop()
            }
        }
        Thread.detachNewThread {
            var signals = sigset_t()
            sigemptyset(&signals)
            sigaddset(&signals, SIGINT)
            sigaddset(&signals, SIGTERM)
            var received: Int32 = 0
            sigwait(&signals, &received)
            logger.verbose("Shutting down (signal \(received))")
            device.stop()
        }
        let reason = device.waitUntilStopped()
        server.stop()
        server.listener.removeSocketFile()
        logger.verbose("Device closing (\(reason))")
        if case .failed = reason { return 1 }
        return 0
    }
}
