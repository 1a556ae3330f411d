#!/usr/bin/env bash
# Roaming. The implementation under test (WG_IMPL, default warren-wireguard) runs in namespace A,
# Debian's wireguard-go in B. During a rate-limited TCP transfer from B to A, B moves to a new
# underlay address and a new listen port. B's next data packets reach A from the new place, A
# must move its endpoint for B there (its acknowledgements follow), and the transfer must complete
# with matching SHA-256 at both ends, on the same session (roaming needs no new handshake). Then B
# moves once more while idle, speaks first with a ping, and A sends a transfer to the new place.
WIT_ID="${WIT_ID:-rm}"
WIT_PREFIX="${WIT_PREFIX:-wio}"
source "$(dirname "$0")/lib.sh"
wit_require

wit_pair warren "${WIT_PEER_IMPL:-wggo}"
wit_ping "$NS_A" "$IN4_B"
wit_ping "$NS_B" "$IN4_A"
PUB_B="$(wit_pub b)"
endpoint_of_b() { wit_wg "$NS_A" show "$IF_A" endpoints | awk -v k="$PUB_B" '$1 == k { print $2 }'; }
log "A's endpoint for B: $(endpoint_of_b)"
[[ "$(endpoint_of_b)" == "$UNDER_B:$PORT_B" ]] || fail "A's endpoint for B is $(endpoint_of_b) before the move"
HS_A0="$(wit_latest_handshake "$NS_A" "$IF_A" "$PUB_B")"

# move_b ADDRESS PORT: B's underlay address and listen port change under its running session.
move_b() {
    log "B moves from $(ip -n "$NS_B" -4 -o addr show dev "$VETH_B" | awk '{print $4}') to $1:$2"
    ip -n "$NS_B" addr flush dev "$VETH_B"
    ip -n "$NS_B" addr add "$1/24" dev "$VETH_B"
    wit_wg "$NS_B" set "$IF_B" listen-port "$2"
}

MB=$((1024 * 1024))
( set -e; sleep 2; move_b "10.$WIT_N.0.3" 51999 ) &
MOVE_PID=$!
WIT_PIDS+=($MOVE_PID)
# 48 MB at 8 MB/s: about 6 s; B moves 2 s in.
wit_transfer "$NS_B" "$NS_A" "$IN4_A" 5004 $((48 * MB)) $((8 * MB))
wait "$MOVE_PID" || fail "moving B failed"
ENDPOINT="$(endpoint_of_b)"
log "A's endpoint for B after the move: $ENDPOINT"
[[ "$ENDPOINT" == "10.$WIT_N.0.3:51999" ]] || fail "A's endpoint for B is $ENDPOINT, not 10.$WIT_N.0.3:51999"
HS_A1="$(wit_latest_handshake "$NS_A" "$IF_A" "$PUB_B")"
log "A's latest handshake with B: $HS_A0 before the move, $HS_A1 after"
[[ "$HS_A1" == "$HS_A0" ]] || fail "a new handshake happened: roaming should keep the session"

# Idle this time: B speaks first from its new place.
move_b "10.$WIT_N.0.4" 52000
wit_ping "$NS_B" "$IN4_A"
ENDPOINT="$(endpoint_of_b)"
log "A's endpoint for B after the second move: $ENDPOINT"
[[ "$ENDPOINT" == "10.$WIT_N.0.4:52000" ]] || fail "A's endpoint for B is $ENDPOINT, not 10.$WIT_N.0.4:52000"
wit_ping "$NS_A" "$IN4_B"
wit_ping "$NS_A" "$IN6_B"
wit_transfer "$NS_A" "$NS_B" "$IN6_B" 5005 $((16 * MB))
wit_check_show "$NS_A" "$IF_A"
log "PASS"
