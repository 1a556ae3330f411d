// The process's own figures, read from /proc at each scrape, under the names Prometheus' client libraries
// use for them (so that dashboards made for other exporters work unchanged):
//
//   process_cpu_seconds_total           counter  user + system CPU time (/proc/self/stat utime + stime)
//   process_resident_memory_bytes       gauge    resident set size (rss pages x page size)
//   process_virtual_memory_bytes        gauge    virtual memory size (vsize)
//   process_virtual_memory_max_bytes    gauge    RLIMIT_AS soft limit (2^64-1 when unlimited, as RLIM_INFINITY reads)
//   process_open_fds                    gauge    entries of /proc/self/fd
//   process_max_fds                     gauge    RLIMIT_NOFILE soft limit
//   process_start_time_seconds          gauge    start time since the Unix epoch (boot time + starttime ticks)
//
// The boot time is the realtime clock less CLOCK_BOOTTIME, not /proc/stat's btime: a service with systemd's
// ProcSubset=pid (packaging/) sees only /proc/<pid>, and the figures must not go missing there.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One reading of the process's figures.
public struct ProcessReading: Sendable, Equatable {
    public var cpuSeconds: Double
    public var residentBytes: Double
    public var virtualBytes: Double
    public var virtualMaxBytes: Double
    public var openFDs: Double
    public var maxFDs: Double
    public var startTimeSeconds: Double

    public enum Failure: Error, CustomStringConvertible {
        case unreadable(String)
        case malformed(String)

        public var description: String {
            switch self {
            case .unreadable(let path): "cannot read \(path)"
            case .malformed(let what): "unexpected contents: \(what)"
            }
        }
    }

    /// Reads /proc/self (Linux).
    public static func current() throws -> ProcessReading {
        let stat = try readFile("/proc/self/stat")
        let fields = try statFields(stat)
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        guard ticks > 0, pageSize > 0 else { throw Failure.malformed("sysconf") }
        let boot = try bootTime()
        return ProcessReading(
            cpuSeconds: (fields.utime + fields.stime) / ticks,
            residentBytes: fields.rssPages * pageSize,
            virtualBytes: fields.vsize,
            virtualMaxBytes: softLimit(Int32(RLIMIT_AS.rawValue)),
            openFDs: try openDescriptors(),
            maxFDs: softLimit(Int32(RLIMIT_NOFILE.rawValue)),
            startTimeSeconds: boot + fields.starttime / ticks)
    }

    /// The fields of /proc/PID/stat this needs. The command name (field 2) is in parentheses and may hold
    /// spaces and parentheses itself, so the fields are counted from the last ')'.
    static func statFields(_ text: String) throws -> (utime: Double, stime: Double, starttime: Double, vsize: Double, rssPages: Double) {
        guard let close = text.lastIndex(of: ")") else { throw Failure.malformed("/proc/self/stat has no command name") }
        // After ')' come fields 3 (state), 4, ...: field n is at index n - 3.
        let rest = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        func field(_ n: Int) throws -> Double {
            guard rest.count > n - 3, let value = Double(rest[n - 3].trimmingSuffixNewline) else {
                throw Failure.malformed("/proc/self/stat field \(n)")
            }
            return value
        }
        return (try field(14), try field(15), try field(22), try field(23), try field(24))
    }

    /// The boot time in seconds since the epoch: now on the realtime clock less the time since boot.
    static func bootTime() throws -> Double {
        var realtime = timespec(), sinceBoot = timespec()
        guard clock_gettime(CLOCK_REALTIME, &realtime) == 0, clock_gettime(CLOCK_BOOTTIME, &sinceBoot) == 0 else {
            throw Failure.malformed("clock_gettime")
        }
        return Double(realtime.tv_sec - sinceBoot.tv_sec) + Double(realtime.tv_nsec - sinceBoot.tv_nsec) / 1e9
    }

    static func softLimit(_ resource: Int32) -> Double {
        var limit = rlimit()
        #if canImport(Glibc)
        guard getrlimit(__rlimit_resource_t(UInt32(resource)), &limit) == 0 else { return -1 }
        #else
        guard getrlimit(resource, &limit) == 0 else { return -1 }
        #endif
        return Double(limit.rlim_cur)
    }

    /// Entries of /proc/self/fd, less the descriptor that lists them.
    static func openDescriptors() throws -> Double {
        guard let directory = opendir("/proc/self/fd") else { throw Failure.unreadable("/proc/self/fd") }
        defer { closedir(directory) }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in
                name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
            }
            if !isDot { count += 1 }
        }
        return Double(max(0, count - 1))
    }

    static func readFile(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure.unreadable(path) }
        defer { close(fd) }
        var bytes = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { throw Failure.unreadable(path) }
            if n == 0 { break }
            bytes.append(contentsOf: buffer[0..<n])
            // Nothing this reads is longer than a page or two.
            if bytes.count > 1 << 20 { break }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Substring {
    fileprivate var trimmingSuffixNewline: Substring {
        var s = self
        while let last = s.last, last == "\n" || last == " " { s = s.dropLast() }
        return s
    }
}
