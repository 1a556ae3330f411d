// The DERP map that warren-control sends, built as headscale v0.29.2 builds it (hscontrol/derp/derp.go and
// app.go): the maps of `derp.urls` (fetched, JSON), then of `derp.paths` (files, YAML or JSON), merged region by
// region with the later source winning and a region given as null removed; then the embedded relay's region
// put over whatever has its ID (unless `derp.add_embedded_region` / headscale's
// `derp.server.automatically_add_embedded_derp_region` is false). At start a file that cannot be read or does
// not parse stops the server, naming it; a URL that cannot be fetched is logged, naming it, and the other
// sources apply (headscale refuses to start then). With `auto_update_enabled` the map is rebuilt every
// `update_frequency`; a source that fails then keeps its last good regions; a changed map goes to every open map
// stream (MapResponse.DERPMap).
//
// The documents are tailcfg.DERPMap: the JSON field names (Regions, RegionID, HostName, STUNPort, ...) or, as
// headscale's YAML reader spells the same fields, in lower case (regions, regionid, hostname, stunport, ...).
// Keys are matched without regard to case, as Go's JSON decoder does. A file's unknown key is refused (a typo
// would otherwise be silently dropped); a fetched map's unknown keys are skipped (Tailscale adds fields).

import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import ServiceLifecycle
import Synchronization
import WarrenControlServer
import WarrenTailcfg
import Yams

struct DERPMapSettings {
    var urls: [String] = []
    var paths: [String] = []
    var autoUpdate = false
    /// headscale's default.
    var updateFrequency: Duration = .seconds(3 * 3600)
    var addEmbeddedRegion = true
    /// How long a fetch may take in all (headscale: 30 s).
    var fetchTimeout: Duration = .seconds(30)
    /// The largest map accepted from a URL or a file (Tailscale's default map is about 30 KB).
    var maximumBytes = 4 << 20

    var hasSources: Bool { !urls.isEmpty || !paths.isEmpty }
}

struct DERPMapSourceError: Error, CustomStringConvertible {
    /// The file or URL.
    var source: String
    var problem: String
    var description: String { "DERP map \(source): \(problem)" }
}

/// One source's regions by ID; a nil region is one the document gives as null (removed from the merged map).
typealias DERPMapLayer = [Int: DERPRegion?]

enum DERPMapDocument {
    /// Parses a file: YAML (which includes JSON).
    static func parseFile(_ data: Data, source: String) throws -> DERPMapLayer {
        let text = String(decoding: data, as: UTF8.self)
        let aliases = ServeConfigFile.aliasCount(text)
        guard aliases <= ServeConfigFile.maximumAliases else {
            throw DERPMapSourceError(source: source, problem: "uses \(aliases) YAML aliases; at most \(ServeConfigFile.maximumAliases) are accepted")
        }
        let tree: Any?
        do {
            tree = try Yams.load(yaml: text)
        } catch {
            throw DERPMapSourceError(source: source, problem: "not valid YAML or JSON: \(error)")
        }
        return try layer(from: tree, source: source, strict: true)
    }

    /// Parses a fetched answer: JSON.
    static func parseJSON(_ data: Data, source: String) throws -> DERPMapLayer {
        let tree: Any
        do {
            tree = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw DERPMapSourceError(source: source, problem: "not JSON: \((error as NSError).localizedDescription)")
        }
        return try layer(from: tree, source: source, strict: false)
    }

    /// A mapping's entries with lower-cased string keys (YAML gives integer keys as integers).
    private static func entries(_ value: Any?) -> [(key: String, value: Any)]? {
        if let map = value as? [String: Any] { return map.map { ($0.key, $0.value) } }
        if let map = value as? [AnyHashable: Any] { return map.map { ("\($0.key.base)", $0.value) } }
        return nil
    }

    static func layer(from tree: Any?, source: String, strict: Bool) throws -> DERPMapLayer {
        func fail(_ key: String, _ problem: String) -> DERPMapSourceError {
            DERPMapSourceError(source: source, problem: key.isEmpty ? problem : "\(key): \(problem)")
        }
        guard let tree, !(tree is NSNull) else { return [:] }
        guard let top = entries(tree) else { throw fail("", "expected a DERP map (a mapping with Regions)") }
        var regionsValue: Any?
        for (key, value) in top {
            switch key.lowercased() {
            case "regions": regionsValue = value
            case "homeparams", "omitdefaultregions": break  // headscale's merge keeps only the regions
            default: if strict { throw fail(key, "unknown key (a DERP map has Regions, HomeParams, omitDefaultRegions)") }
            }
        }
        guard let regionsValue, !(regionsValue is NSNull) else { return [:] }
        guard let regions = entries(regionsValue) else { throw fail("Regions", "expected a mapping of region ID to region") }
        var out = DERPMapLayer()
        for (key, value) in regions.sorted(by: { $0.key < $1.key }) {
            let path = "Regions.\(key)"
            guard let id = Int(key), id > 0, id <= Int(Int32.max) else { throw fail(path, "a region ID is a positive number") }
            if value is NSNull {
                out[id] = .some(nil)
                continue
            }
            out[id] = .some(try region(value, id: id, path: path, fail: fail, strict: strict))
        }
        return out
    }

    private static func region(_ value: Any, id: Int, path: String, fail: (String, String) -> DERPMapSourceError,
                               strict: Bool) throws -> DERPRegion {
        guard let fields = entries(value) else { throw fail(path, "expected a region (RegionID, RegionCode, RegionName, Nodes)") }
        var region = DERPRegion(regionID: id, regionCode: "", regionName: "", nodes: [])
        var nodesValue: Any?
        for (key, v) in fields {
            let at = "\(path).\(key)"
            if v is NSNull { continue }
            switch key.lowercased() {
            case "regionid":
                let given = try integer(v, at, fail)
                guard given == id else { throw fail(at, "\(given) differs from the region's key \(id)") }
            case "regioncode": region.regionCode = try string(v, at, fail)
            case "regionname": region.regionName = try string(v, at, fail)
            case "latitude": region.latitude = try number(v, at, fail)
            case "longitude": region.longitude = try number(v, at, fail)
            case "avoid": region.avoid = try bool(v, at, fail) ? true : nil
            case "nomeasurenohome": region.noMeasureNoHome = try bool(v, at, fail) ? true : nil
            case "nodes": nodesValue = v
            default: if strict { throw fail(at, "unknown key") }
            }
        }
        var nodes: [DERPNode] = []
        if let nodesValue {
            guard let list = nodesValue as? [Any] else { throw fail("\(path).Nodes", "expected a list of nodes") }
            for (i, item) in list.enumerated() {
                nodes.append(try node(item, regionID: id, path: "\(path).Nodes[\(i)]", fail: fail, strict: strict))
            }
        }
        region.nodes = nodes
        return region
    }

    private static func node(_ value: Any, regionID: Int, path: String, fail: (String, String) -> DERPMapSourceError,
                             strict: Bool) throws -> DERPNode {
        guard let fields = entries(value) else { throw fail(path, "expected a node (Name, RegionID, HostName, ...)") }
        var node = DERPNode(name: "", regionID: regionID, hostName: "")
        for (key, v) in fields {
            let at = "\(path).\(key)"
            if v is NSNull { continue }
            switch key.lowercased() {
            case "name": node.name = try string(v, at, fail)
            case "regionid":
                let given = try integer(v, at, fail)
                guard given == regionID else { throw fail(at, "\(given) differs from the region's ID \(regionID)") }
            case "hostname": node.hostName = try string(v, at, fail)
            case "certname": node.certName = try nonEmpty(string(v, at, fail))
            case "ipv4": node.ipv4 = try nonEmpty(string(v, at, fail))
            case "ipv6": node.ipv6 = try nonEmpty(string(v, at, fail))
            case "stunport":
                let port = try integer(v, at, fail)
                guard (-1...65535).contains(port) else { throw fail(at, "expected a port (0: 3478, -1: no STUN)") }
                node.stunPort = port == 0 ? nil : port
            case "stunonly": node.stunOnly = try bool(v, at, fail) ? true : nil
            case "derpport":
                let port = try integer(v, at, fail)
                guard (0...65535).contains(port) else { throw fail(at, "expected a port (0: 443)") }
                node.derpPort = port == 0 ? nil : port
            case "insecurefortests": node.insecureForTests = try bool(v, at, fail) ? true : nil
            case "stuntestip": node.stunTestIP = try nonEmpty(string(v, at, fail))
            case "canport80": node.canPort80 = try bool(v, at, fail) ? true : nil
            default: if strict { throw fail(at, "unknown key") }
            }
        }
        guard !node.hostName.isEmpty || node.ipv4 != nil || node.ipv6 != nil else {
            throw fail(path, "a node needs a HostName (or an IPv4 or IPv6 address)")
        }
        return node
    }

    private static func nonEmpty(_ s: String) -> String? { s.isEmpty ? nil : s }

    private static func string(_ v: Any, _ at: String, _ fail: (String, String) -> DERPMapSourceError) throws -> String {
        if let s = v as? String { return s }
        if let n = v as? Int { return String(n) }  // a YAML name such as 900 (unquoted) is a number
        throw fail(at, "expected a string")
    }

    private static func integer(_ v: Any, _ at: String, _ fail: (String, String) -> DERPMapSourceError) throws -> Int {
        if let n = v as? Int { return n }
        if let d = v as? Double, d == d.rounded(), abs(d) < 1e15 { return Int(d) }
        throw fail(at, "expected a number")
    }

    private static func number(_ v: Any, _ at: String, _ fail: (String, String) -> DERPMapSourceError) throws -> Double {
        if let n = v as? Int { return Double(n) }
        if let d = v as? Double { return d }
        throw fail(at, "expected a number")
    }

    private static func bool(_ v: Any, _ at: String, _ fail: (String, String) -> DERPMapSourceError) throws -> Bool {
        if let b = v as? Bool { return b }
        throw fail(at, "expected true or false")
    }

    /// headscale's merge: each layer's regions over the earlier ones', null removing a region.
    static func merge(_ layers: [DERPMapLayer]) -> [Int: DERPRegion] {
        var out: [Int: DERPRegion] = [:]
        for layer in layers {
            for (id, region) in layer {
                if let region { out[id] = region } else { out[id] = nil }
            }
        }
        return out
    }
}

/// Reads the configured sources and builds the map. Each source's last good map is kept: a URL that cannot be
/// fetched, or a file that no longer parses, at a refresh keeps giving what it gave before.
final class DERPMapAssembler: Sendable {
    let urls: [String]
    let paths: [String]
    let fetchTimeout: Duration
    let maximumBytes: Int
    /// The embedded relay's region, put over the merged sources (nil: not added).
    let embeddedRegion: DERPRegion?
    private let lastGood = Mutex<[String: DERPMapLayer]>([:])

    init(settings: DERPMapSettings, embeddedRegion: DERPRegion?) {
        urls = settings.urls
        paths = settings.paths
        fetchTimeout = settings.fetchTimeout
        maximumBytes = settings.maximumBytes
        self.embeddedRegion = settings.addEmbeddedRegion ? embeddedRegion : nil
    }

    /// Reads every source now. With `filesMustRead` (at start) a file that cannot be read or parsed throws; every
    /// other failure is returned beside the map, which then holds that source's last good regions (none at start).
    func build(filesMustRead: Bool) async throws -> (map: DERPMap, problems: [DERPMapSourceError]) {
        var layers: [DERPMapLayer] = []
        var problems: [DERPMapSourceError] = []
        func use(_ source: String, _ read: () async throws -> DERPMapLayer) async throws {
            do {
                let layer = try await read()
                lastGood.withLock { $0[source] = layer }
                layers.append(layer)
            } catch let error as DERPMapSourceError {
                problems.append(error)
                if let kept = lastGood.withLock({ $0[source] }) { layers.append(kept) }
            }
        }
        for url in urls {
            try await use(url) {
                try DERPMapDocument.parseJSON(
                    try await DERPMapFetcher.fetch(url, timeout: fetchTimeout, maximumBytes: maximumBytes), source: url)
            }
        }
        for path in paths {
            if filesMustRead {
                let layer = try DERPMapDocument.parseFile(try Self.read(path, maximumBytes: maximumBytes), source: path)
                lastGood.withLock { $0[path] = layer }
                layers.append(layer)
            } else {
                try await use(path) { try DERPMapDocument.parseFile(try Self.read(path, maximumBytes: maximumBytes), source: path) }
            }
        }
        var regions = DERPMapDocument.merge(layers)
        if let embeddedRegion { regions[embeddedRegion.regionID] = embeddedRegion }
        return (DERPMap(regions: regions, omitDefaultRegions: true), problems)
    }

    static func read(_ path: String, maximumBytes: Int) throws -> Data {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read" : "no such file"
            throw DERPMapSourceError(source: path, problem: reason)
        }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: maximumBytes + 1) ?? Data()
        } catch {
            throw DERPMapSourceError(source: path, problem: "cannot be read (\((error as NSError).localizedDescription))")
        }
        guard data.count <= maximumBytes else {
            throw DERPMapSourceError(source: path, problem: "larger than \(maximumBytes) bytes")
        }
        return data
    }
}

/// GET of a DERP map with a time limit and a size limit (the body is cut off past the limit, not held).
enum DERPMapFetcher {
    static func fetch(_ text: String, timeout: Duration, maximumBytes: Int) async throws -> Data {
        guard let url = URL(string: text) else { throw DERPMapSourceError(source: text, problem: "not a URL") }
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let configuration = URLSessionConfiguration.ephemeral
        configuration.timeoutIntervalForRequest = seconds
        configuration.timeoutIntervalForResource = seconds
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        let collector = BoundedCollector(limit: maximumBytes)
        let session = URLSession(configuration: configuration, delegate: collector, delegateQueue: nil)
        defer { session.invalidateAndCancel() }
        var request = URLRequest(url: url, timeoutInterval: seconds)
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        let outcome: BoundedCollector.Outcome = await withCheckedContinuation { continuation in
            collector.start(session.dataTask(with: request), continuation)
        }
        switch outcome {
        case .failed(let message):
            throw DERPMapSourceError(source: text, problem: message)
        case .tooLarge:
            throw DERPMapSourceError(source: text, problem: "the answer is larger than \(maximumBytes) bytes")
        case .done(let status, let data):
            guard status == 200 else { throw DERPMapSourceError(source: text, problem: "answered HTTP \(status), not 200") }
            return data
        }
    }

    final class BoundedCollector: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        enum Outcome: Sendable {
            case done(status: Int, Data)
            case tooLarge
            case failed(String)
        }

        private struct State {
            var data = Data()
            var status = 0
            var tooLarge = false
            var continuation: CheckedContinuation<Outcome, Never>?
        }

        let limit: Int
        private let state = Mutex(State())

        init(limit: Int) { self.limit = limit }

        func start(_ task: URLSessionDataTask, _ continuation: CheckedContinuation<Outcome, Never>) {
            state.withLock { $0.continuation = continuation }
            task.resume()
        }

        private func finish(_ outcome: Outcome) {
            let continuation = state.withLock { s -> CheckedContinuation<Outcome, Never>? in
                defer { s.continuation = nil }
                return s.continuation
            }
            continuation?.resume(returning: outcome)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
            let tooLarge = response.expectedContentLength > Int64(limit)
            state.withLock {
                $0.status = status
                $0.tooLarge = tooLarge
            }
            completionHandler(tooLarge ? .cancel : .allow)
            if tooLarge { finish(.tooLarge) }
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            let over = state.withLock { s -> Bool in
                guard !s.tooLarge else { return false }
                s.data.append(data)
                if s.data.count > limit {
                    s.tooLarge = true
                    s.data = Data()
                    return true
                }
                return false
            }
            if over {
                dataTask.cancel()
                finish(.tooLarge)
            }
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: (any Error)?) {
            let (status, data, tooLarge) = state.withLock { ($0.status, $0.data, $0.tooLarge) }
            if tooLarge { return finish(.tooLarge) }
            if let error {
                let ns = error as NSError
                let reason = ns.code == NSURLErrorTimedOut ? "no answer within the time limit" : ns.localizedDescription
                return finish(.failed("cannot fetch: \(reason)"))
            }
            finish(.done(status: status, data))
        }
    }
}

/// Rebuilds the map every `frequency` (headscale's derp.auto_update_enabled). A source that fails keeps its last
/// good regions and is tried again at the next update; a map that differs from the one in force goes to every open
/// map stream.
final class DERPMapRefresher: Service {
    let assembler: DERPMapAssembler
    let engine: ControlEngine
    let frequency: Duration
    let logger: Logger
    private let current: Mutex<DERPMap>

    init(assembler: DERPMapAssembler, engine: ControlEngine, initial: DERPMap, frequency: Duration, logger: Logger) {
        self.assembler = assembler
        self.engine = engine
        self.frequency = frequency
        self.logger = logger
        current = Mutex(initial)
    }

    func run() async throws {
        // A shutdown cancels the wait and any fetch in progress.
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: self.frequency)
                } catch {
                    return
                }
                await self.refreshOnce()
            }
        }
    }

    func refreshOnce() async {
        logger.debug("fetching DERP map updates")
        guard let (map, problems) = try? await assembler.build(filesMustRead: false) else { return }
        for problem in problems {
            logger.error("\(problem); its last good regions stay, tried again at the next update")
        }
        let changed = current.withLock { old -> Bool in
            defer { old = map }
            return old != map
        }
        if changed {
            await engine.setDERPMap(map)
            logger.info("DERP map changed; sent to the open map streams",
                        metadata: ["regions": "\(map.regions.keys.sorted().map(String.init).joined(separator: ","))"])
        }
    }
}

/// `serve`'s DERP map: built once at start, then refreshed if asked. At start a file that cannot be read or parsed
/// stops the server (a mistake in the configuration); a URL that cannot be fetched is logged and left out, and the
/// other sources apply (headscale v0.29.2 refuses to start instead: "getting DERPMap: ...").
struct DERPMapSetup {
    var map: DERPMap
    var assembler: DERPMapAssembler
    var settings: DERPMapSettings
    var logger: Logger

    /// - Parameter embeddedRegion: the embedded relay's region, nil when the relay is off.
    static func start(file: ServeConfigFile, embeddedRegion: DERPRegion?, logger: Logger) async throws -> DERPMapSetup {
        let settings = file.derpMapSources
        // headscale refuses the same: without its own region added, the relay must be described in a file.
        if embeddedRegion != nil, !settings.addEmbeddedRegion, settings.paths.isEmpty {
            Console.printError("warren-control: derp: with the embedded relay on, turning off its region "
                               + "(add_embedded_region / automatically_add_embedded_derp_region: false) needs derp.paths that describe it")
            throw ExitCode(2)
        }
        let assembler = DERPMapAssembler(settings: settings, embeddedRegion: embeddedRegion)
        let map: DERPMap
        do {
            let built = try await assembler.build(filesMustRead: true)
            map = built.map
            for problem in built.problems {
                let until = settings.autoUpdate ? "until a later update fetches it" : "until a restart (auto_update_enabled is off)"
                logger.error("\(problem); left out of the DERP map \(until)")
            }
        } catch {
            Console.printError("warren-control: \(error)")
            throw ExitCode(2)
        }
        if map.regions.isEmpty {
            logger.warning("the DERP map is empty: clients get no relay (turn derp.enabled on, or give derp.urls or derp.paths)")
        } else {
            let described = map.regions.keys.sorted().map { id in "\(id) \(map.regions[id]!.regionCode)" }.joined(separator: ", ")
            logger.info("DERP map", metadata: ["regions": "\(described)"])
        }
        return DERPMapSetup(map: map, assembler: assembler, settings: settings, logger: logger)
    }

    /// The refresher, when `auto_update_enabled` and there is something to refresh from.
    func refresher(engine: ControlEngine) -> DERPMapRefresher? {
        guard settings.autoUpdate, settings.hasSources else { return nil }
        return DERPMapRefresher(assembler: assembler, engine: engine, initial: map, frequency: settings.updateFrequency,
                                logger: logger)
    }
}
