// Test support: a PostgreSQL server of the test's own, from Debian's binaries (/usr/lib/postgresql/<version>/bin):
// initdb into a fresh directory /tmp/warren-pgtest-*, run as the postgres user (PostgreSQL refuses root), listening
// on a Unix socket in that directory (trust) and on a free 127.0.0.1 port (password, SCRAM). Each test takes a
// fresh database of it. Stopped (`pg_ctl stop -m immediate`) and removed when the test process exits, or by
// `stop()`. Never linked into a product.

import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public final class PostgresTestServer: Sendable {
    /// Why no server can run here: tests skip, or fail when WARREN_INTEROP_REQUIRED=1 (`required`).
    public struct Unavailable: Error, CustomStringConvertible {
        public let reason: String
        public let required: Bool
        public var description: String {
            required ? "PostgreSQL required (WARREN_INTEROP_REQUIRED=1) but \(reason)" : "PostgreSQL tests skipped: \(reason)"
        }
    }

    /// A step that failed while the server was being set up or used.
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The temporary directory: data, logs, and the Unix socket.
    public let directory: String
    /// The directory of the Unix socket (`host` for a client).
    public var socketDirectory: String { directory }
    public let port: Int
    /// The superuser (`postgres`) password for TCP logins.
    public let password: String
    public let user = "postgres"
    let binDirectory: String
    let runuser: String
    private let stopped = Mutex(false)

    public static var isRequired: Bool { ProcessInfo.processInfo.environment["WARREN_INTEROP_REQUIRED"] == "1" }

    private static let sharedServer = Mutex<Result<PostgresTestServer, Unavailable>?>(nil)
    private static let running = Mutex<[PostgresTestServer]>([])

    /// One server for the whole test process (started at the first call).
    public static func shared() throws -> PostgresTestServer {
        try sharedServer.withLock { cached in
            if let cached { return try cached.get() }
            do {
                let server = try start()
                cached = .success(server)
                return server
            } catch let error as Unavailable {
                cached = .failure(error)
                throw error
            } catch {
                let unavailable = Unavailable(reason: "\(error)", required: isRequired)
                cached = .failure(unavailable)
                throw unavailable
            }
        }
    }

    /// The binaries' directory of the newest PostgreSQL installed.
    public static func binaries() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        guard let version = versions.last(where: { FileManager.default.isExecutableFile(atPath: "\(root)/\($0)/bin/initdb") }) else {
            throw Unavailable(reason: "PostgreSQL is not installed (\(root)/<version>/bin/initdb; scripts/setup.d/postgres.sh installs it)",
                              required: isRequired)
        }
        return "\(root)/\(version)/bin"
    }

    /// A new server of its own (a test that stops or restarts it; others use `shared()`).
    public static func start() throws -> PostgresTestServer {
        guard getuid() == 0 else {
            throw Unavailable(reason: "not root (the test runs PostgreSQL as the postgres user through runuser)", required: isRequired)
        }
        let bin = try binaries()
        guard let account = getpwnam("postgres") else {
            throw Unavailable(reason: "there is no postgres user (Debian's postgresql package creates it)", required: isRequired)
        }
        let (uid, gid) = (account.pointee.pw_uid, account.pointee.pw_gid)
        guard let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"].first(where: FileManager.default.isExecutableFile) else {
            throw Unavailable(reason: "runuser is missing (util-linux)", required: isRequired)
        }
        sweepAbandoned(bin: bin, runuser: runuser)
        var template = Array("/tmp/warren-pgtest-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure(description: "mkdtemp: errno \(errno)") }
        let directory = String(cString: made)
        guard chown(directory, uid, gid) == 0, chmod(directory, 0o700) == 0 else {
            try? FileManager.default.removeItem(atPath: directory)
            throw Failure(description: "cannot hand \(directory) to the postgres user: errno \(errno)")
        }
        // The test process that owns the server: a later run stops a server whose owner died without its atexit
        // (a crash), and removes it.
        FileManager.default.createFile(atPath: directory + "/owner.pid", contents: Data("\(getpid())\n".utf8))
        let password = (0..<24).map { _ in String("abcdefghijkmnpqrstuvwxyz23456789".randomElement()!) }.joined()
        let passwordFile = directory + "/password"
        let port: Int
        do {
            FileManager.default.createFile(atPath: passwordFile, contents: Data((password + "\n").utf8), attributes: [.posixPermissions: 0o600])
            guard chown(passwordFile, uid, gid) == 0 else { throw Failure(description: "chown \(passwordFile): errno \(errno)") }
            port = try LoopbackPort.free()
            try run([runuser, "-u", "postgres", "--", bin + "/initdb", "-D", directory + "/data", "-U", "postgres", "--no-sync",
                     "--no-instructions", "-E", "UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256",
                     "--pwfile=" + passwordFile], log: directory + "/initdb.log")
            try run([runuser, "-u", "postgres", "--", bin + "/pg_ctl", "-D", directory + "/data", "-l", directory + "/server.log", "-w",
                     "-t", "60", "-o", "-k \(directory) -p \(port) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                     "start"], log: directory + "/pg_ctl.log")
        } catch {
            let log = (try? String(contentsOfFile: directory + "/server.log", encoding: .utf8)).map { "\n" + $0.suffix(2000) } ?? ""
            try? FileManager.default.removeItem(atPath: directory)
            throw Failure(description: "\(error)\(log)")
        }
        let server = PostgresTestServer(directory: directory, port: port, password: password, binDirectory: bin, runuser: runuser)
        let first = running.withLock { list in
            list.append(server)
            return list.count == 1
        }
        if first { atexit { PostgresTestServer.stopAll() } }
        return server
    }

    private init(directory: String, port: Int, password: String, binDirectory: String, runuser: String) {
        self.runuser = runuser
        self.directory = directory
        self.port = port
        self.password = password
        self.binDirectory = binDirectory
    }

    /// Stops and removes the servers of earlier test processes that died without stopping theirs.
    private static func sweepAbandoned(bin: String, runuser: String) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/tmp")) ?? []
        for name in names where name.hasPrefix("warren-pgtest-") {
            let directory = "/tmp/" + name
            guard let text = try? String(contentsOfFile: directory + "/owner.pid", encoding: .utf8),
                  let owner = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  owner != getpid(), kill(owner, 0) != 0, errno == ESRCH else { continue }
            if FileManager.default.fileExists(atPath: directory + "/data/postmaster.pid") {
                _ = try? run([runuser, "-u", "postgres", "--", bin + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"],
                             log: "/dev/null")
            }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    private static func stopAll() {
        for server in running.withLock({ $0 }) { server.stop() }
    }

    private static let counter = Atomic<Int>(0)

    /// A new, empty database (owned by the superuser); returns its name.
    public func createDatabase(prefix: String = "warren") throws -> String {
        let name = "\(prefix)_\(getpid())_\(Self.counter.wrappingAdd(1, ordering: .relaxed).newValue)"
        try psql("CREATE DATABASE \(name)", database: "postgres")
        return name
    }

    /// Runs SQL with psql over the Unix socket (as the superuser); returns its unaligned output.
    @discardableResult
    public func psql(_ sql: String, database: String) throws -> String {
        try Self.run([binDirectory + "/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", directory, "-p", String(port),
                      "-U", user, "-d", database, "-c", sql], log: directory + "/psql-\(UUID().uuidString.prefix(8)).log")
    }

    /// Stops the server at once (`-m immediate`) and removes its directory (idempotent).
    public func stop() {
        let already = stopped.withLock { stopped in
            defer { stopped = true }
            return stopped
        }
        guard !already else { return }
        _ = try? Self.run([runuser, "-u", "postgres", "--", binDirectory + "/pg_ctl", "-D", directory + "/data", "-m", "immediate",
                           "-w", "stop"], log: "/dev/null")
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs a command to its end with its output in `log` (a file, so that a daemon it starts cannot hold a pipe
    /// open); returns the output, or throws it with the exit status. posix_spawn and a blocking waitpid on the
    /// child's pid, not Foundation's Process: its termination monitor has missed a child's exit here (the child
    /// left a zombie and waitUntilExit never returned, with `runuser … pg_ctl start`).
    @discardableResult
    static func run(_ arguments: [String], log: String) throws -> String {
        let pid: pid_t
        do {
            pid = try LoggedSpawn.start(arguments, log: log, append: false)
        } catch let error as LoggedSpawn.Failure {
            throw Failure(description: error.description)
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw Failure(description: "waitpid \(arguments[0]): errno \(errno)") }
        }
        let output = log == "/dev/null" ? "" : ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        if log != "/dev/null" { unlink(log) }
        // Exited normally with 0 (WIFEXITED and WEXITSTATUS, spelled out: the macros are not imported).
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited, code == 0 else {
            throw Failure(description: "\((arguments[0] as NSString).lastPathComponent) \(arguments.dropFirst().suffix(3).joined(separator: " ")) "
                                      + (exited ? "exited with \(code)" : "was killed by signal \(status & 0x7f)") + ": \(output.suffix(1500))")
        }
        return output
    }
}
