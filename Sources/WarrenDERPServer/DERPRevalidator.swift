// Admission taken back while connected. A relay decides admission once, at login (as Tailscale's derper does with
// --verify-client-url); a node deleted or expired afterwards would keep relaying until it disconnects. The
// revalidator asks again, for every connected key, every `interval` and whenever `checkNow()` is called (warren-control
// calls it after an admin change to nodes), and disconnects the keys no longer admitted (``DERPServer/revoke(_:)``).

public import ServiceLifecycle

public final class DERPRevalidator: Service, Sendable {
    public let server: DERPServer
    public let interval: Duration
    private let stillAdmitted: DERPRevalidation
    private let wake: AsyncStream<Void>
    private let waker: AsyncStream<Void>.Continuation

    public init(server: DERPServer, interval: Duration = .seconds(1), stillAdmitted: @escaping DERPRevalidation) {
        self.server = server
        self.interval = interval
        self.stillAdmitted = stillAdmitted
        (wake, waker) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks again now (from any thread; checks already asked for and not yet run coalesce).
    public func checkNow() { waker.yield() }

    /// Checks every `interval` and when asked, until cancelled or graceful shutdown.
    public func run() async throws {
        let ticker = Task { [interval, waker] in
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                waker.yield()
            }
        }
        defer { ticker.cancel() }
        await cancelWhenGracefulShutdown {
            for await _ in self.wake {
                if Task.isCancelled { return }
                await self.server.revalidate(self.stillAdmitted)
            }
        }
    }
}
