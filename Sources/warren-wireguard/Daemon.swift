import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Starting in the background the way wireguard-go does: the process starts a copy of itself in
/// a new session with an environment variable that keeps it in the foreground, and returns once
/// the copy says (over a pipe) that the interface is up, or failed.
enum Daemon {
    static let foregroundVariable = "WG_PROCESS_FOREGROUND"
    static let readinessVariable = "WARREN_WIREGUARD_READY_FD"

    /// The write end of the readiness pipe, when this process was started by `startInBackground`.
    struct Readiness {
        let descriptor: Int32?

        init(environment: [String: String]) {
            descriptor = environment[Daemon.readinessVariable].flatMap { Int32($0) }
            unsetenv(Daemon.readinessVariable)
        }

        var isNone: Bool { descriptor == nil }

        /// Writes "1" (up) or "0" and an error text, then closes the pipe.
        func report(success: Bool, message: String) {
            guard let fd = descriptor else { return }
            let bytes = Array((success ? "1" : "0" + message).utf8)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
    }

    /// Starts the background copy and waits for its report. Returns the exit status for this process.
    static func startInBackground(arguments: [String], environment: [String: String]) -> Int32 {
        var pipeFDs: [Int32] = [0, 0]
        guard pipe(&pipeFDs) == 0 else {
            FileHandle.standardError.write(Data("warren-wireguard: pipe failed: errno \(errno)\n".utf8))
            return 1
        }
        let (readEnd, writeEnd) = (pipeFDs[0], pipeFDs[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)

        var env = environment
        env[foregroundVariable] = "1"
        env[readinessVariable] = String(writeEnd)
        // As wireguard-go: the background copy keeps stdout/stderr only when LOG_LEVEL asks for output.
        let level = environment["LOG_LEVEL"]?.lowercased()
        let keepOutput = level != nil && level != "silent"

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if !keepOutput {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, 0x80 /* POSIX_SPAWN_SETSID (glibc) */)

        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, argv, envp)
        close(writeEnd)
        guard rc == 0 else {
            FileHandle.standardError.write(Data("warren-wireguard: cannot start in the background: errno \(rc)\n".utf8))
            close(readEnd)
            return 1
        }
        var report = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
            if n > 0 { report += chunk[0..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        close(readEnd)
        if report.first == UInt8(ascii: "1") { return 0 }
        let message = report.isEmpty ? "warren-wireguard: the background process exited before the interface was up\n"
            : String(decoding: report.dropFirst(), as: UTF8.self)
        FileHandle.standardError.write(Data(message.utf8))
        return 1
    }
}
