// `warren-control import headscale`: a headscale database (and its Noise key and policy) into a new Warren state
// directory, so that the machines headscale knew reconnect to warren-control without logging in again. Wiring only:
// the reading, checking and writing are WarrenControlSQLite's HeadscaleImport.

import ArgumentParser
import Foundation
import TailscaleKeys
import WarrenControlSQLite
import WarrenControlStore
import WarrenPolicy

struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Bring another control server's state into Warren's.",
        subcommands: [ImportHeadscaleCommand.self])
}

struct ImportHeadscaleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "headscale",
        abstract: "Import a headscale (v0.26.x to v0.29.x) SQLite database: users, nodes, pre-auth and API keys, the policy.",
        discussion: """
            Run it with warren-control and headscale stopped. The import goes into an empty Warren database in one \
            transaction: it lands whole or not at all. With --noise-key (headscale's noise_private.key), that key \
            becomes warren-control's control key, so clients keep the server key they know. Users keep their e-mail, \
            identity-provider id and profile picture URL (when it is an http(s) URL). Pre-auth keys and API keys keep their text: headscale's bcrypt hashes are \
            carried as they are and checked as headscale checks them. Not carried, and listed: expired keys, spent \
            one-off keys, keys of no live user and without tags, soft-deleted rows. Never carried: headscale's own \
            settings outside the database.
            """)

    @Option(help: "headscale's SQLite database (default: database.sqlite.path of --config).")
    var db: String?

    @Option(help: "headscale's Noise private key file, privkey:<hex> (default: noise.private_key_path of --config, if it exists).")
    var noiseKey: String?

    @Option(help: "headscale's config.yaml: the database, the Noise key and, in file mode, the policy file it names.")
    var config: String?

    @Option(help: "The state directory warren-control serve will use (default /var/lib/warren); control.key goes there.")
    var stateDir: String?

    @Option(help: "The Warren database to create (default <state-dir>/warren.sqlite, as serve uses it).")
    var database: String?

    @Flag(help: "Read and check everything, print what would be imported, write nothing.")
    var dryRun = false

    func run() async throws {
        do {
            try await perform()
        } catch let error as HeadscaleImportError {
            Console.printError("warren-control: import headscale: \(error)")
            throw ExitCode.failure
        } catch let error as StoreError {
            Console.printError("warren-control: import headscale: \(error.message)")
            throw ExitCode.failure
        }
    }

    private func perform() async throws {
        var file: ServeConfigFile?
        if let config {
            do {
                file = try ServeConfigFile.load(path: config)
            } catch let error as ConfigError {
                throw HeadscaleImportError("--config \(config): \(error)")
            }
        }
        guard let source = db ?? file?.headscale.databasePath else {
            throw ValidationError("name headscale's database with --db PATH (or --config with database.sqlite.path)")
        }
        var keyPath = noiseKey
        if keyPath == nil, let configured = file?.headscale.controlKeyPath, FileManager.default.fileExists(atPath: configured) {
            keyPath = configured
        }
        let stateDirectory = stateDir ?? "/var/lib/warren"
        let target = database ?? ServeCommand.databasePath(stateDir: stateDirectory)
        let controlKeyPath = stateDirectory + "/control.key"

        // Everything is read and checked before anything is written.
        let snapshot = try HeadscaleImport.read(path: source)
        var policyFile: (text: String, path: String)?
        if let path = file?.policyPath {
            guard let data = FileManager.default.contents(atPath: path) else { throw HeadscaleImportError("cannot read policy file \(path)") }
            policyFile = (String(decoding: data, as: UTF8.self), path)
        }
        let plan = try HeadscaleImport.plan(snapshot, policyFile: policyFile, now: Date())
        if let policy = plan.policy {
            do {
                _ = try PolicyParser.parse(policy)
            } catch {
                let place = error.line.map { " at line \($0):\(error.column ?? 0)" } ?? ""
                throw HeadscaleImportError("the policy from \(plan.policySource ?? "headscale") does not parse\(place): \(error.message)")
            }
        }
        var controlKey: MachinePrivate?
        if let keyPath {
            guard let data = FileManager.default.contents(atPath: keyPath) else { throw HeadscaleImportError("cannot read Noise key \(keyPath)") }
            do {
                controlKey = try MachinePrivate(parsing: String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            } catch {
                throw HeadscaleImportError("\(keyPath) is not a headscale Noise key (expected privkey:<64 hex digits>)")
            }
        }
        if (source as NSString).standardizingPath == (target as NSString).standardizingPath {
            throw HeadscaleImportError("the target database \(target) is headscale's own; give --database (or --state-dir) a new place")
        }
        if let tables = try SQLiteControlStore.foreignTables(path: target) {
            throw HeadscaleImportError("the target \(target) is another program's database (tables \(tables.prefix(5).joined(separator: ", "))); give a new file")
        }
        let keyFileExists = FileManager.default.fileExists(atPath: controlKeyPath)
        if let controlKey, keyFileExists {
            let existing = try? MachinePrivate(parsing: String(decoding: FileManager.default.contents(atPath: controlKeyPath) ?? Data(),
                                                               as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
            if existing?.publicKey != controlKey.publicKey {
                throw HeadscaleImportError("\(controlKeyPath) already holds another control key; move it away to use headscale's")
            }
        }

        printPlan(plan, snapshot: snapshot, source: source, target: target, keyPath: keyPath, controlKey: controlKey,
                  controlKeyPath: controlKeyPath, keyFileExists: keyFileExists)
        if dryRun {
            print("dry run: nothing written")
            return
        }

        do {
            try ServeCommand.prepareStateDirectory(stateDirectory)
            let directory = (target as NSString).deletingLastPathComponent
            if !directory.isEmpty { try ServeCommand.prepareStateDirectory(directory) }
        } catch {
            throw HeadscaleImportError("state directory \(stateDirectory): \(error)")
        }
        let created = !FileManager.default.fileExists(atPath: target)
        func removeCreatedDatabase() {
            guard created else { return }
            for suffix in ["", "-wal", "-shm"] { unlink(target + suffix) }
        }
        let result: HeadscaleImportResult
        do {
            let store = try SQLiteControlStore(path: target)
            do {
                result = try store.transactionSync { try HeadscaleImport.apply(plan, to: $0) }
                try store.close()
            } catch {
                try? store.close()
                throw error
            }
        } catch {
            removeCreatedDatabase()
            throw error
        }
        if let controlKey, !keyFileExists {
            let temporary = controlKeyPath + ".tmp"
            guard FileManager.default.createFile(atPath: temporary, contents: Data((controlKey.textRepresentation + "\n").utf8),
                                                 attributes: [.posixPermissions: 0o600]),
                  rename(temporary, controlKeyPath) == 0 else {
                unlink(temporary)
                removeCreatedDatabase()
                throw HeadscaleImportError("cannot write \(controlKeyPath); nothing was imported")
            }
        }
        print("imported into \(target):")
        for user in result.users {
            print("  user \(user.name): headscale \(user.headscale.map(String.init) ?? "-") -> warren \(user.warren)")
        }
        for node in result.nodes { print("  node \(node.name): headscale \(node.headscale) -> warren \(node.warren)") }
        for key in result.preAuthKeys { print("  pre-auth key: headscale \(key.headscale) -> warren \(key.warren)") }
        for key in result.apiKeys { print("  API key: headscale \(key.headscale) -> warren \(key.warren)") }
        if let version = result.policyVersion { print("  policy: version \(version)") }
        print("start it with: warren-control serve --state-dir \(stateDirectory)"
              + (database == nil ? "" : " (with database.sqlite.path: \(target))"))
    }

    private func printPlan(_ plan: HeadscaleImportPlan, snapshot: HeadscaleSnapshot, source: String, target: String, keyPath: String?,
                           controlKey: MachinePrivate?, controlKeyPath: String, keyFileExists: Bool) {
        print("headscale database \(source): schema \(plan.snapshotGeneration)"
              + (snapshot.recordedVersion.map { " (last opened by headscale \($0))" } ?? ""))
        print("  \(plan.users.count) user(s), \(plan.nodes.count) node(s), \(plan.preAuthKeys.count) pre-auth key(s), "
              + "\(plan.apiKeys.count) API key(s) to carry; "
              + "policy: \(plan.policySource ?? "none")")
        if let controlKey {
            print("  control key: \(keyPath ?? "") (\(controlKey.publicKey)) -> \(controlKeyPath)" + (keyFileExists ? " (already there)" : ""))
        } else {
            print("  control key: none given (--noise-key): warren-control's own key is used; clients fetch the new one on reconnect")
        }
        for note in plan.notes { print("  note: \(note)") }
        for line in plan.leftBehind { print("  not carried: \(line)") }
        print("  into: \(target)")
    }
}
