#!/usr/bin/env bash
# Scenario d: rekey on real sockets. During a rate-limited TCP transfer, a new preshared key is
# set on both sides and Warren's side drops its session (the peer is removed and re-added), which
# forces a new handshake. The transfer must complete with matching checksums, and both sides'
# latest handshake times must have advanced.
WIT_ID="${WIT_ID:-wd}"
source "$(dirname "$0")/lib.sh"
wit_require

wit_pair "${WIT_IMPL_A:-warren}" "${WIT_IMPL_B:-wggo}"
wit_ping "$NS_A" "$IN4_B"
HS_A0="$(wit_latest_handshake "$NS_A" "$IF_A" "$(wit_pub b)")"
HS_B0="$(wit_latest_handshake "$NS_B" "$IF_B" "$(wit_pub a)")"
log "handshakes before: A $HS_A0, B $HS_B0"
[[ "$HS_A0" -gt 0 && "$HS_B0" -gt 0 ]] || fail "no first handshake"
sleep 2   # handshake times have a resolution of one second

MB=$((1024 * 1024))
( sleep 3
  wg genpsk >"$WIT_TMP/new.psk"
  log "rekey: new preshared key on both sides, Warren's side drops its session"
  wit_wg "$NS_B" set "$IF_B" peer "$(wit_pub a)" preshared-key "$WIT_TMP/new.psk"
  wit_wg "$NS_A" set "$IF_A" peer "$(wit_pub b)" remove
  wit_wg "$NS_A" set "$IF_A" peer "$(wit_pub b)" preshared-key "$WIT_TMP/new.psk" \
      endpoint "$UNDER_B:$PORT_B" allowed-ips "$IN4_B/32,$IN6_B/128"
) &
REKEY_PID=$!
WIT_PIDS+=($REKEY_PID)
# 64 MB at 8 MB/s: about 8 s, the rekey happens 3 s in.
wit_transfer "$NS_A" "$NS_B" "$IN4_B" 5003 $((64 * MB)) $((8 * MB))
wait "$REKEY_PID" || fail "rekey commands failed"

HS_A1="$(wit_latest_handshake "$NS_A" "$IF_A" "$(wit_pub b)")"
HS_B1="$(wit_latest_handshake "$NS_B" "$IF_B" "$(wit_pub a)")"
log "handshakes after: A $HS_A1, B $HS_B1"
[[ "$HS_A1" -gt "$HS_A0" ]] || fail "A's handshake time did not advance"
[[ "$HS_B1" -gt "$HS_B0" ]] || fail "B's handshake time did not advance"
[[ "$(wit_wg "$NS_A" show "$IF_A" preshared-keys | awk '{print $2}')" == "$(cat "$WIT_TMP/new.psk")" ]] \
    || fail "A does not report the new preshared key"
# Traffic still flows after the transfer, on the new session.
wit_ping "$NS_B" "$IN6_A"
wit_check_show "$NS_A" "$IF_A"
wit_check_show "$NS_B" "$IF_B"
log "PASS"
