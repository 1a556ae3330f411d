// Starting a process for a test with its output in a file (posix_spawn, not Foundation's Process: a daemon the child
// starts cannot then hold a pipe open, and Process's termination monitor has missed a child's exit here).
import Foundation

public enum LoggedSpawn {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Starts `arguments` (an absolute path first) with stdin from /dev/null and stdout and stderr into `log`
    /// (appended to, or truncated first). `environment` nil: this process's. The child gets every signal's default
    /// action and an empty signal mask (a test runner may hand down blocked or ignored signals). Returns its pid.
    public static func start(_ arguments: [String], log: String, append: Bool = true,
                             environment: [String: String]? = nil) throws -> pid_t {
        let descriptor = open(log, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0o600)
        guard descriptor >= 0 else { throw Failure(description: "cannot open \(log): errno \(errno)") }
        defer { close(descriptor) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, descriptor, 1)
        posix_spawn_file_actions_adddup2(&actions, descriptor, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let variables = environment.map { $0.map { "\($0.key)=\($0.value)" } }
        var envp: [UnsafeMutablePointer<CChar>?] = (variables ?? []).map { strdup($0) } + [nil]
        defer { for pointer in envp { free(pointer) } }
        var pid: pid_t = 0
        let spawned = variables == nil
            ? posix_spawn(&pid, arguments[0], &actions, &attributes, &argv, environ)
            : posix_spawn(&pid, arguments[0], &actions, &attributes, &argv, &envp)
        guard spawned == 0 else { throw Failure(description: "cannot start \(arguments[0]): error \(spawned)") }
        return pid
    }
}
