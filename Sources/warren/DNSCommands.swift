import ArgumentParser
import Foundation
import WarrenDNS
import WarrenLocalAPI

/// `warren dns status|query`, as `tailscale dns` has them.
struct DNSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dns", abstract: "Diagnose the node's DNS (MagicDNS) configuration.",
        subcommands: [DNSStatusCommand.self, DNSQueryCommand.self])
}

struct DNSStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the DNS configuration of this node.")

    @OptionGroup var globals: GlobalOptions

    @Flag(help: "Print the status as JSON.")
    var json = false

    func run() async throws {
        try await reporting {
            let status = try await globals.client.dnsStatus()
            if json {
                try printJSON(status)
                return
            }
            printOut(Self.text(status))
        }
    }

    static func text(_ s: DNSStatus) -> String {
        func list(_ items: [String]) -> String { items.isEmpty ? "  (none)\n" : items.map { "  - \($0)\n" }.joined() }
        var out = "=== Tailnet DNS ===\n\n"
        out += "Accept DNS (--accept-dns): \(s.acceptDNS ? "yes" : "no, the host's DNS is left alone")\n"
        out += "MagicDNS: \(s.magicDNS ? "enabled tailnet-wide (suffix \(s.tailnetDomain))" : "not enabled for this tailnet")\n"
        out += "Listening:\n" + list(s.listening)
        out += "\nResolvers (in preference order):\n" + list(s.resolvers)
        out += "\nSplit DNS routes:\n"
        if s.splitDNSRoutes.isEmpty {
            out += "  (none)\n"
        } else {
            for domain in s.splitDNSRoutes.keys.sorted() {
                let resolvers = s.splitDNSRoutes[domain]!
                out += "  - \(domain) -> \(resolvers.isEmpty ? "(answered by MagicDNS)" : resolvers.joined(separator: ", "))\n"
            }
        }
        out += "\nSearch domains:\n" + list(s.searchDomains)
        out += "\nExtra records:\n" + list(s.extraRecords)
        out += "\n=== System DNS ===\n\n"
        out += "Configured through: \(s.hostMode)\n"
        out += "The host's own resolvers (used for names no route or resolver above covers):\n" + list(s.hostResolvers)
        if let nameservers = s.osNameservers {
            out += "\nThe host was told:\n"
            out += "  nameservers: \(nameservers.joined(separator: " "))\n"
            out += "  search domains: \((s.osSearchDomains ?? []).joined(separator: " "))\n"
            out += "  match domains: \((s.osMatchDomains ?? []).joined(separator: " "))\n"
        } else {
            out += "\nThe host's DNS configuration is not changed.\n"
        }
        return out
    }
}

struct DNSQueryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "query", abstract: "Resolve a name through MagicDNS.")

    @OptionGroup var globals: GlobalOptions

    @Argument(help: "The name to resolve.")
    var name: String

    @Argument(help: "The record type (A, AAAA, PTR, TXT, CNAME, ...).")
    var type: String = "A"

    @Flag(help: "Print the response as JSON.")
    var json = false

    func run() async throws {
        try await reporting {
            let answer = try await globals.client.dnsQuery(name: name, type: type)
            if json {
                try printJSON(answer)
                return
            }
            let message: DNSMessage
            do {
                message = try DNSMessage(bytes: [UInt8](answer.bytes))
            } catch {
                throw CLIError("warrend sent a DNS response that does not decode: \(error)")
            }
            printOut(Self.text(name: name, type: type, resolvers: answer.resolvers, message))
        }
    }

    static func text(name: String, type: String, resolvers: [String], _ message: DNSMessage) -> String {
        var out = "DNS query for \"\(name)\" (\(type.uppercased())) using the internal resolver:\n"
        if !resolvers.isEmpty { out += "Forwarding to resolvers: \(resolvers.joined(separator: ", "))\n" }
        out += "Response code: \(message.header.responseCode)\n"
        if message.answers.isEmpty {
            out += "\n(no answer records)\n"
            return out
        }
        out += "\n"
        var rows = [["NAME", "TTL", "CLASS", "TYPE", "DATA"]]
        for record in message.answers {
            rows.append([record.name.description, "\(record.ttl)", "\(record.class)", "\(record.type)", Self.describe(record.data)])
        }
        var widths = [Int](repeating: 0, count: 5)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        for row in rows {
            out += row.enumerated().map { i, cell in i == 4 ? cell : cell.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0) }.joined() + "\n"
        }
        return out
    }

    static func describe(_ data: DNSRecordData) -> String {
        switch data {
        case .a(let ip), .aaaa(let ip): return "\(ip)"
        case .ns(let n), .cname(let n), .ptr(let n): return n.description
        case .mx(let preference, let exchange): return "\(preference) \(exchange)"
        case .txt(let strings): return strings.map { "\"\(String(decoding: $0, as: UTF8.self))\"" }.joined(separator: " ")
        case .srv(let priority, let weight, let port, let target): return "\(priority) \(weight) \(port) \(target)"
        case .soa(let soa): return "\(soa.primaryNameServer) \(soa.responsibleMailbox) \(soa.serial)"
        default: return "\(data)"
        }
    }
}
