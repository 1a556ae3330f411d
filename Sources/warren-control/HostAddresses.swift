// The host's own addresses, for the suggestion serve prints when server_url is missing on a wildcard listener.

import Foundation
import WarrenPacket

enum HostAddresses {
    /// The first address of an interface that is up and not loopback (IPv4 first, then global IPv6), if any.
    static func firstNonLoopback() -> String? {
        var head: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&head) == 0, let first = head else { return nil }
        defer { freeifaddrs(head) }
        var v4: [String] = []
        var v6: [String] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            let flags = Int32(entry.pointee.ifa_flags)
            guard flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0, let address = entry.pointee.ifa_addr else { continue }
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let family = Int32(address.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            guard getnameinfo(address, length, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
            let text = String(cString: buffer)
            guard let parsed = IPAddress(text) else { continue }   // link-local IPv6 carries a %zone: skipped
            if parsed.version == .v4 { v4.append(text) } else if !text.lowercased().hasPrefix("fe80") { v6.append(text) }
        }
        return v4.first ?? v6.first
    }
}
