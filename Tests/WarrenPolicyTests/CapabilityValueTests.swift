import Foundation
import WarrenPacket
import WarrenPolicy
import WarrenTailcfg
import XCTest

/// Area 3 of issue 11: the value a capability is sent with. Tailscale (and headscale v2, whose
/// companionCapGrantRules and compileNodeAttrs store a nil tailcfg.RawMessage list) sends a capability
/// that carries no arguments as JSON null, not as `[]`; values written in a grant's `app` go out as written.
/// Each policy here is new, compiled by the reference compiler and the engine (which must agree).
final class CapabilityValueTests: XCTestCase {
    /// The CapMap of every capability grant a node receives, as JSON text per capability name.
    func capValues(_ p: NodePolicy?) -> [String: [String]] {
        var out: [String: [String]] = [:]
        // Object members in a fixed order: JSONValue's objects are dictionaries, encoded in hash order.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for rule in p?.packetFilter ?? [] {
            for g in rule.capGrant ?? [] {
                for (name, value) in g.capMap ?? [:] {
                    let text = value.map { v in String(decoding: try! encoder.encode(v), as: UTF8.self) } ?? "null"
                    out[name, default: []].append(text)
                }
            }
        }
        return out.mapValues { $0.sorted() }
    }

    /// A Taildrive grant from alice's devices to the web server: the server gets `cap/drive` with the values
    /// as written; alice's devices get the companion `cap/drive-sharer` (the other way) with a null value.
    func testTaildriveCompanionIsNull() throws {
        let out = try Fidelity.compile("""
            "grants": [{"src": ["alice@example.com"], "dst": ["tag:web"],
                        "app": {"tailscale.com/cap/drive": [{"shares": ["docs"], "access": "ro"}]}}]
            """)
        XCTAssertEqual(capValues(out["web"]), ["tailscale.com/cap/drive": [#"[{"access":"ro","shares":["docs"]}]"#]])
        XCTAssertEqual(capValues(out["alice-laptop"]), ["tailscale.com/cap/drive-sharer": ["null"]])
        XCTAssertEqual(capValues(out["alice-phone"]), ["tailscale.com/cap/drive-sharer": ["null"]])
        XCTAssertEqual(capValues(out["bob-laptop"]), [:])
        // On the wire: the companion's value is null.
        let wire = String(decoding: try JSONEncoder().encode(out["alice-laptop"]!.packetFilter), as: UTF8.self)
        XCTAssertTrue(wire.contains(#""tailscale.com\/cap\/drive-sharer":null"#) || wire.contains(#""tailscale.com/cap/drive-sharer":null"#), wire)
    }

    /// A peer relay grant: the relay's `cap/relay` as written, `cap/relay-target` null on the sources.
    func testRelayCompanionIsNull() throws {
        let out = try Fidelity.compile("""
            "grants": [{"src": ["bob@example.com"], "dst": ["tag:db"], "app": {"tailscale.com/cap/relay": []}}]
            """)
        XCTAssertEqual(capValues(out["db"]), ["tailscale.com/cap/relay": ["[]"]])
        XCTAssertEqual(capValues(out["bob-laptop"]), ["tailscale.com/cap/relay-target": ["null"]])
    }

    /// `app` values are sent as written: `[]` stays an empty list, `[{}]` one empty object, `null` null.
    func testAppValuesAreSentAsWritten() throws {
        let out = try Fidelity.compile("""
            "grants": [{"src": ["*"], "dst": ["tag:web"],
                        "app": {"example.com/cap/empty": [], "example.com/cap/obj": [{}], "example.com/cap/none": null}}]
            """)
        XCTAssertEqual(capValues(out["web"]), ["example.com/cap/empty": ["[]"], "example.com/cap/obj": ["[{}]"],
                                               "example.com/cap/none": ["null"]])
    }

    /// Node attributes carry no arguments: each `attr` (and `randomizeClientPort`) is null; an `app` value for
    /// the same node appends its values; a bare attribute named again stays as it is.
    func testNodeAttributesAreNull() throws {
        let out = try Fidelity.compile("""
            "randomizeClientPort": true,
            "nodeAttrs": [
              {"target": ["tag:web"], "attr": ["funnel", "drive:share"]},
              {"target": ["*"], "attr": ["drive:share"]},
              {"target": ["alice@example.com"], "app": {"example.com/cap/x": [{"a": 1}]}},
              {"target": ["alice@example.com"], "app": {"example.com/cap/x": [2]}},
            ]
            """)
        let web = try XCTUnwrap(out["web"]).capabilities
        let bare: NodeCapMap = ["funnel": nil, "drive:share": nil, "randomize-client-port": nil]
        XCTAssertEqual(web, bare)
        XCTAssertEqual(web.count, 3)
        let laptop = try XCTUnwrap(out["alice-laptop"]).capabilities
        let values: [JSONValue]? = [.object(["a": .number(1)]), .number(2)]
        XCTAssertEqual(laptop["example.com/cap/x"], .some(values))
        let null: [JSONValue]? = nil
        XCTAssertEqual(laptop["drive:share"], .some(null))
    }
}
