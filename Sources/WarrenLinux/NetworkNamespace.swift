#if os(Linux)
import CWarrenLinux
import Glibc

/// Named network namespaces (`ip netns add NAME`, bound at /run/netns/NAME).
public enum NetworkNamespace {
    /// Runs `body` with the calling thread inside the namespace `name`, then moves it back.
    /// Sockets and TUN devices opened in `body` stay in that namespace. Needs CAP_SYS_ADMIN.
    public static func run<T>(in name: String, _ body: () throws -> T) throws -> T {
        let original = try SystemError.check(cwarren_netns_open("/proc/thread-self/ns/net"), "open own network namespace")
        defer { Glibc.close(original) }
        let target = try SystemError.check(cwarren_netns_open("/run/netns/\(name)"), "open network namespace \(name)")
        defer { Glibc.close(target) }
        _ = try SystemError.check(cwarren_netns_enter(target), "setns \(name)")
        // A thread left in the wrong namespace would open everything after this in it.
        defer { precondition(cwarren_netns_enter(original) == 0, "could not return to the original network namespace") }
        return try body()
    }
}
#endif
