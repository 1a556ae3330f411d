#!/usr/bin/env bash
# Scenario c: `WG_QUICK_USERSPACE_IMPLEMENTATION=<warren-wireguard> wg-quick up ./IFACE.conf` brings
# Warren up from a configuration file inside a namespace (wg-quick also sets the addresses, MTU
# and routes), ping through it to a wireguard-go peer, then `wg-quick down` removes the interface
# and the userspace process exits and removes its UAPI socket.
WIT_ID="${WIT_ID:-wq}"
source "$(dirname "$0")/lib.sh"
wit_require wg-quick

WIT_N=$(( (0x$(echo -n "$WIT_ID" | sha256sum | cut -c1-4) % 200) + 20 ))
NS_A="${WIT_PREFIX}${WIT_ID}a"; NS_B="${WIT_PREFIX}${WIT_ID}b"
IF_A="${WIT_PREFIX}${WIT_ID}a0"; IF_B="${WIT_PREFIX}${WIT_ID}b0"
UNDER_A="10.$WIT_N.0.1"; UNDER_B="10.$WIT_N.0.2"
wit_netns "$NS_A"
wit_netns "$NS_B"
wit_link "$NS_A" "${WIT_PREFIX}${WIT_ID}va" "$UNDER_A" "$NS_B" "${WIT_PREFIX}${WIT_ID}vb" "$UNDER_B"
wit_keys a
wit_keys b

# The wireguard-go peer, configured with wg as in the other scenarios.
wit_start "$NS_B" "$IF_B" wggo
wit_wg "$NS_B" set "$IF_B" private-key "$WIT_TMP/b.key" listen-port 51821 \
    peer "$(wit_pub a)" endpoint "$UNDER_A:51820" allowed-ips "10.$WIT_N.1.1/32,fd00:$WIT_N::1/128"
wit_address "$NS_B" "$IF_B" "10.$WIT_N.1.2" "fd00:$WIT_N::2"

# Warren from a wg-quick file. The peer's AllowedIPs are whole subnets so that wg-quick's routes
# (not just the on-link /24) are what carries the traffic to 10.N.7.0/24.
ip -n "$NS_B" addr add "10.$WIT_N.7.1/32" dev "$IF_B"
CONF="$WIT_TMP/$IF_A.conf"
cat >"$CONF" <<CONF
[Interface]
PrivateKey = $(cat "$WIT_TMP/a.key")
ListenPort = 51820
Address = 10.$WIT_N.1.1/24, fd00:$WIT_N::1/64

[Peer]
PublicKey = $(wit_pub b)
Endpoint = $UNDER_B:51821
AllowedIPs = 10.$WIT_N.1.2/32, fd00:$WIT_N::2/128, 10.$WIT_N.7.0/24
CONF
WIT_INTERFACES+=("$IF_A")
IMPL="$(wit_binary warren)"
log "wg-quick up with WG_QUICK_USERSPACE_IMPLEMENTATION=$IMPL"
ip netns exec "$NS_A" env WG_QUICK_USERSPACE_IMPLEMENTATION="$IMPL" LOG_LEVEL=silent wg-quick up "$CONF" 2>&1 \
    | sed 's/^/    [wg-quick up] /'
[[ ${PIPESTATUS[0]} -eq 0 ]] || fail "wg-quick up"

DAEMON_PIDS="$(ip netns pids "$NS_A")"
[[ -n "$DAEMON_PIDS" ]] || fail "no userspace process left running in $NS_A after wg-quick up"
log "userspace process(es) in $NS_A: $DAEMON_PIDS"
ip -n "$NS_A" -br addr show dev "$IF_A" | sed 's/^/    /'
ip -n "$NS_A" route show dev "$IF_A" | sed 's/^/    route: /'
ip -n "$NS_A" route show dev "$IF_A" | grep -q "10.$WIT_N.7.0/24" || fail "wg-quick did not add the AllowedIPs route"
[[ "$(ip -n "$NS_A" -o link show dev "$IF_A" | grep -o 'mtu [0-9]*')" == "mtu 1420" ]] || fail "MTU is not 1420"

wit_ping "$NS_A" "10.$WIT_N.1.2"
wit_ping "$NS_A" "fd00:$WIT_N::2"
wit_ping "$NS_A" "10.$WIT_N.7.1"
wit_ping "$NS_B" "10.$WIT_N.1.1"
wit_check_show "$NS_A" "$IF_A"

ip netns exec "$NS_A" wg-quick down "$CONF" 2>&1 | sed 's/^/    [wg-quick down] /'
[[ ${PIPESTATUS[0]} -eq 0 ]] || fail "wg-quick down"
for i in $(seq 1 50); do
    alive=""
    for pid in $DAEMON_PIDS; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
    [[ -z "$alive" && ! -e "$WIT_SOCKET_DIR/$IF_A.sock" ]] && break
    sleep 0.1
done
[[ -z "$alive" ]] || fail "the userspace process ($alive) still runs after wg-quick down"
[[ ! -e "$WIT_SOCKET_DIR/$IF_A.sock" ]] || fail "$WIT_SOCKET_DIR/$IF_A.sock left behind after wg-quick down"
ip -n "$NS_A" link show "$IF_A" >/dev/null 2>&1 && fail "$IF_A still exists"
log "PASS"
