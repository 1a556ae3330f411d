#!/usr/bin/env bash
# Scenario a: Warren in one namespace, Debian's wireguard-go in the other. Ping both ways over
# the IPv4 and IPv6 inner addresses, a 100 MB TCP transfer each way checked by SHA-256, and
# `wg show` on both sides with a handshake and byte counters.
WIT_ID="${WIT_ID:-wa}"
source "$(dirname "$0")/lib.sh"
wit_require

wit_pair "${WIT_IMPL_A:-warren}" "${WIT_IMPL_B:-wggo}"

wit_ping "$NS_A" "$IN4_B"
wit_ping "$NS_B" "$IN4_A"
wit_ping "$NS_A" "$IN6_B"
wit_ping "$NS_B" "$IN6_A"

MB=$((1024 * 1024))
wit_transfer "$NS_A" "$NS_B" "$IN4_B" 5001 $((100 * MB))
wit_transfer "$NS_B" "$NS_A" "$IN6_A" 5002 $((100 * MB))

wit_check_show "$NS_A" "$IF_A"
wit_check_show "$NS_B" "$IF_B"
log "PASS"
