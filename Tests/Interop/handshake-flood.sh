#!/usr/bin/env bash
# Handshake flood. The implementation under test (WG_IMPL, default warren-wireguard) runs in
# namespace A, Debian's wireguard-go in B, and a third namespace C (a bogus source that is no
# peer of anyone) floods A with handshake initiations that carry a valid MAC1 for A's public key
# (hsflood.py; FLOOD_RATE per second, default 10000, for at most FLOOD_SECONDS, default 60). While the flood
# runs, B starts its first handshake with A. A is under load, so it must answer B with a cookie
# reply instead of doing Diffie-Hellman; B must come back with an initiation that carries MAC2
# (the cookie), and A must answer that one with a handshake response. Checked on the wire (an
# AF_PACKET watcher on B's link), with `wg show latest-handshakes` on both sides, and with B's
# ping that started the handshake getting its answer. Pings during the flood are reported; after
# the flood A must answer again within 20 s.
WIT_ID="${WIT_ID:-fl}"
WIT_PREFIX="${WIT_PREFIX:-wio}"
source "$(dirname "$0")/lib.sh"
wit_require
: "${FLOOD_RATE:=10000}"
: "${FLOOD_SECONDS:=60}"
: "${FLOOD_MINIMUM_RATE:=2000}"

wit_pair warren "${WIT_PEER_IMPL:-wggo}"
PUB_A="$(wit_pub a)"; PUB_B="$(wit_pub b)"
[[ "$(wit_latest_handshake "$NS_A" "$IF_A" "$PUB_B")" == 0 ]] || fail "A and B shook hands before the flood"

NS_C="${WIT_PREFIX}${WIT_ID}c"
wit_netns "$NS_C"
UNDER_A2="10.$WIT_N.2.1"; UNDER_C="10.$WIT_N.2.2"
wit_link "$NS_A" "${WIT_PREFIX}${WIT_ID}vac" "$UNDER_A2" "$NS_C" "${WIT_PREFIX}${WIT_ID}vc" "$UNDER_C"

ip netns exec "$NS_B" python3 "$WIT_HERE/hsflood.py" watch "$VETH_B" \
    >"$WIT_TMP/watch.out" 2>"$WIT_TMP/watch.log" &
WATCH_PID=$!
WIT_PIDS+=($WATCH_PID)
ip netns exec "$NS_C" python3 "$WIT_HERE/hsflood.py" flood "$UNDER_A2" "$PORT_A" "$PUB_A" \
    "$FLOOD_RATE" "$FLOOD_SECONDS" >"$WIT_TMP/flood.out" 2>"$WIT_TMP/flood.log" &
FLOOD_PID=$!
WIT_PIDS+=($FLOOD_PID)
FLOOD_START=$SECONDS
TOOLS_STOPPED=0
# Stops the flood and the watcher and prints what they counted (also on the way to a failure).
stop_tools() {
    [[ $TOOLS_STOPPED == 1 ]] && return 0
    TOOLS_STOPPED=1
    kill -TERM "$FLOOD_PID" "$WATCH_PID" 2>/dev/null || true
    wait "$FLOOD_PID" || log "the flood tool failed: $(cat "$WIT_TMP/flood.log")"
    wait "$WATCH_PID" || log "the watcher failed: $(cat "$WIT_TMP/watch.log")"
    FLOOD="$(cat "$WIT_TMP/flood.out")"
    WATCH="$(cat "$WIT_TMP/watch.out")"
    log "flood: $FLOOD"
    log "on B's link: $WATCH"
}
flood_fail() { stop_tools; fail "$@"; }
log "flooding $UNDER_A2:$PORT_A from $NS_C at $FLOOD_RATE initiations/s"
sleep 2
kill -0 "$FLOOD_PID" 2>/dev/null || fail "the flood tool stopped: $(cat "$WIT_TMP/flood.log")"

# B's first packet to A starts its handshake. With a cookie, wireguard-go retries after
# REKEY_TIMEOUT (5 s), so the first ping reply can take a little over 5 s.
log "B pings A while A is flooded"
ip netns exec "$NS_B" ping -n -c 1 -W 25 "$IN4_A" >"$WIT_TMP/ping-first.log" 2>&1 \
    || { cat "$WIT_TMP/ping-first.log"; flood_fail "B's first ping through A got no answer within 25 s of flood"; }
log "B's first ping: $(grep -oE 'time=[0-9.]+ ms' "$WIT_TMP/ping-first.log")"
HS_A="$(wit_latest_handshake "$NS_A" "$IF_A" "$PUB_B")"
HS_B="$(wit_latest_handshake "$NS_B" "$IF_B" "$PUB_A")"
log "handshake done after $((SECONDS - FLOOD_START)) s of flood: latest handshake A $HS_A, B $HS_B"
[[ "$HS_A" -gt 0 && "$HS_B" -gt 0 ]] || flood_fail "wg show latest-handshakes shows no handshake (A $HS_A, B $HS_B)"
kill -0 "$FLOOD_PID" 2>/dev/null || flood_fail "the flood ended before the handshake completed; raise FLOOD_SECONDS"
# How data fares during the flood is reported, not judged: it depends on how much CPU the machine
# leaves the responder (the requirement is the handshake above, and its ping reply).
for direction in "$NS_B $IN4_A" "$NS_A $IN6_B"; do
    read -r ns address <<<"$direction"
    log "during the flood, $ns -> $address: $( (ip netns exec "$ns" ping -n -q -c 5 -i 0.2 -W 3 "$address" 2>&1 || true) \
        | grep -E 'packets transmitted' || echo 'no answer')"
done
kill -0 "$FLOOD_PID" 2>/dev/null || flood_fail "the flood ended before the pings; raise FLOOD_SECONDS"

stop_tools
[[ -n "$FLOOD" && -n "$WATCH" ]] || fail "the flood tool or the watcher printed nothing"

# The verdicts, from the two JSON records.
python3 - "$FLOOD" "$WATCH" "$UNDER_A:$PORT_A" "$UNDER_B:$PORT_B" "$FLOOD_MINIMUM_RATE" <<'PY' || fail "see above"
import json, sys
flood, watch = json.loads(sys.argv[1]), json.loads(sys.argv[2])
a, b, minimum = sys.argv[3], sys.argv[4], float(sys.argv[5])
def count(label): return watch.get(label, 0)
checks = [
    (flood["rate"] >= minimum, f"the flood reached {flood['rate']}/s, less than {minimum:.0f}/s"),
    (flood["cookie_replies"] > 0, "A sent no cookie reply to the flood source: it never considered itself under load"),
    (count(f"{b}>{a} type-1") > 0, "B sent no initiation without a cookie"),
    (count(f"{a}>{b} type-3") > 0, "A sent B no cookie reply: the handshake did not go through the cookie path"),
    (count(f"{b}>{a} type-1 mac2") > 0, "B never sent an initiation with MAC2 (the cookie)"),
    (count(f"{a}>{b} type-2") > 0, "A sent B no handshake response"),
]
bad = [message for ok, message in checks if not ok]
for message in bad:
    print("  -", message)
sys.exit(1 if bad else 0)
PY
# A recovers after the flood (once it has worked through what queued up in its socket).
for attempt in $(seq 1 20); do
    ip netns exec "$NS_A" ping -n -q -c 1 -W 1 "$IN4_B" >/dev/null 2>&1 && break
    [[ $attempt == 20 ]] && fail "A does not answer through the tunnel 20 s after the flood"
done
log "A answers again $attempt s (at most) after the flood"
wit_ping "$NS_A" "$IN4_B"
wit_check_show "$NS_A" "$IF_A"
log "PASS"
