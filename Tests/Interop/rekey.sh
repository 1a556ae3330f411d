#!/usr/bin/env bash
# Rekey on real sockets. The implementation under test (WG_IMPL, default warren-wireguard) runs in
# namespace A, Debian's wireguard-go in B (WIT_PEER_IMPL=warren puts the implementation under test
# there too). During a rate-limited TCP transfer from A to B, two new handshakes are forced:
#   1. A new preshared key is set on B, and A drops its session (the peer is removed and added
#      back with the new key): A initiates, B responds.
#   2. Another preshared key is set on A, and B drops its session the same way and sends a ping:
#      B initiates, A responds while packets of the old session are still in flight.
# A handshake with a stale preshared key cannot complete, so traffic that flows after each step
# proves the new handshake. The transfer must complete with matching SHA-256 at both ends, both
# sides' latest handshake times must advance, and both must report the last key.
WIT_ID="${WIT_ID:-rk}"
WIT_PREFIX="${WIT_PREFIX:-wio}"
source "$(dirname "$0")/lib.sh"
wit_require

wit_pair warren "${WIT_PEER_IMPL:-wggo}"
wit_ping "$NS_A" "$IN4_B"
PUB_A="$(wit_pub a)"; PUB_B="$(wit_pub b)"
HS_A0="$(wit_latest_handshake "$NS_A" "$IF_A" "$PUB_B")"
HS_B0="$(wit_latest_handshake "$NS_B" "$IF_B" "$PUB_A")"
log "handshakes before: A $HS_A0, B $HS_B0"
[[ "$HS_A0" -gt 0 && "$HS_B0" -gt 0 ]] || fail "no first handshake"

# rekey_drop NS IFACE PUB ENDPOINT ALLOWED PSK: the side in NS forgets its session with PUB and
# sets it up again with a new preshared key; its next packet starts a new handshake.
rekey_drop() {
    wit_wg "$1" set "$2" peer "$3" remove
    wit_wg "$1" set "$2" peer "$3" preshared-key "$6" endpoint "$4" allowed-ips "$5"
}

MB=$((1024 * 1024))
wg genpsk >"$WIT_TMP/psk1"
wg genpsk >"$WIT_TMP/psk2"
( set -e
  sleep 3
  log "rekey 1: new preshared key on B, A drops its session and initiates"
  wit_wg "$NS_B" set "$IF_B" peer "$PUB_A" preshared-key "$WIT_TMP/psk1"
  rekey_drop "$NS_A" "$IF_A" "$PUB_B" "$UNDER_B:$PORT_B" "$IN4_B/32,$IN6_B/128" "$WIT_TMP/psk1"
  sleep 4
  log "rekey 2: new preshared key on A, B drops its session and initiates"
  wit_wg "$NS_A" set "$IF_A" peer "$PUB_B" preshared-key "$WIT_TMP/psk2"
  rekey_drop "$NS_B" "$IF_B" "$PUB_A" "$UNDER_A:$PORT_A" "$IN4_A/32,$IN6_A/128" "$WIT_TMP/psk2"
  # B only sends TCP acknowledgements, and only for data it can decrypt: a ping from B starts its
  # handshake at once (otherwise A would only notice after REKEY_TIMEOUT + KEEPALIVE_TIMEOUT).
  ip netns exec "$NS_B" ping -n -q -c 1 -W 5 "$IN4_A" >/dev/null
) &
REKEY_PID=$!
WIT_PIDS+=($REKEY_PID)
# 96 MB at 8 MB/s: about 12 s; the rekeys happen 3 s and 7 s in.
wit_transfer "$NS_A" "$NS_B" "$IN4_B" 5003 $((96 * MB)) $((8 * MB))
wait "$REKEY_PID" || fail "the rekey commands failed"

HS_A1="$(wit_latest_handshake "$NS_A" "$IF_A" "$PUB_B")"
HS_B1="$(wit_latest_handshake "$NS_B" "$IF_B" "$PUB_A")"
log "handshakes after: A $HS_A1, B $HS_B1"
[[ "$HS_A1" -gt "$HS_A0" ]] || fail "A's latest handshake did not advance ($HS_A0 -> $HS_A1)"
[[ "$HS_B1" -gt "$HS_B0" ]] || fail "B's latest handshake did not advance ($HS_B0 -> $HS_B1)"
PSK_A="$(wit_wg "$NS_A" show "$IF_A" preshared-keys | awk '{print $2}')"
PSK_B="$(wit_wg "$NS_B" show "$IF_B" preshared-keys | awk '{print $2}')"
[[ "$PSK_A" == "$(cat "$WIT_TMP/psk2")" ]] || fail "A does not report the last preshared key"
[[ "$PSK_B" == "$(cat "$WIT_TMP/psk2")" ]] || fail "B does not report the last preshared key"
# Traffic still flows both ways on the session keyed with the last preshared key.
wit_ping "$NS_B" "$IN6_A"
wit_ping "$NS_A" "$IN4_B"
wit_check_show "$NS_A" "$IF_A"
wit_check_show "$NS_B" "$IF_B"
log "PASS"
