#!/usr/bin/env bash
# Scenario e: roaming. The wireguard-go side moves to a new underlay address and a new listen
# port; its next packets reach Warren from there, Warren updates the peer's endpoint, and the
# session carries on both ways.
WIT_ID="${WIT_ID:-we}"
source "$(dirname "$0")/lib.sh"
wit_require

wit_pair "${WIT_IMPL_A:-warren}" "${WIT_IMPL_B:-wggo}"
wit_ping "$NS_A" "$IN4_B"
wit_ping "$NS_B" "$IN4_A"
log "A's endpoint for B before: $(wit_wg "$NS_A" show "$IF_A" endpoints | awk '{print $2}')"
HS_A0="$(wit_latest_handshake "$NS_A" "$IF_A" "$(wit_pub b)")"

NEW_UNDER_B="10.$WIT_N.0.3"
NEW_PORT_B=51999
log "B moves to $NEW_UNDER_B:$NEW_PORT_B"
ip -n "$NS_B" addr del "$UNDER_B/24" dev "wit${WIT_ID}vb"
ip -n "$NS_B" addr add "$NEW_UNDER_B/24" dev "wit${WIT_ID}vb"
wit_wg "$NS_B" set "$IF_B" listen-port $NEW_PORT_B

# B speaks first from its new place; A learns the new endpoint from the authenticated packets.
wit_ping "$NS_B" "$IN4_A"
ENDPOINT="$(wit_wg "$NS_A" show "$IF_A" endpoints | awk '{print $2}')"
log "A's endpoint for B after: $ENDPOINT"
[[ "$ENDPOINT" == "$NEW_UNDER_B:$NEW_PORT_B" ]] || fail "A's endpoint for B is $ENDPOINT, not $NEW_UNDER_B:$NEW_PORT_B"
wit_ping "$NS_A" "$IN4_B"
wit_ping "$NS_A" "$IN6_B"
MB=$((1024 * 1024))
wit_transfer "$NS_A" "$NS_B" "$IN4_B" 5004 $((20 * MB))
HS_A1="$(wit_latest_handshake "$NS_A" "$IF_A" "$(wit_pub b)")"
log "A's latest handshake with B: $HS_A0 before the move, $HS_A1 after"
wit_check_show "$NS_A" "$IF_A"
log "PASS"
