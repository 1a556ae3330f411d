# Shared helpers for the interop scenarios: two (or three) network namespaces joined by veth
# pairs, a userspace WireGuard in each, all configured with WireGuard's own `wg`.
#
# Source it from a scenario script after setting WIT_ID (a short id, unique per scenario:
# namespaces are wit${WIT_ID}a / wit${WIT_ID}b / wit${WIT_ID}c).
#
# Environment:
#   WG_IMPL            the implementation in Warren's place: warren-wireguard (the default), wireguard-go
#                      (same as WIT_BASELINE=1), or a path to an executable
#   WIT_PREFIX         first letters of every namespace and interface name (default: wit)
#   WARREN_WIREGUARD   path to warren-wireguard (default: <package>/.build/debug/warren-wireguard)
#   WIT_BASELINE=1     run wireguard-go wherever a scenario would run Warren (validates the
#                      harness itself against the reference implementation)
#   WIT_KEEP=1         leave namespaces and logs behind for debugging
#
# Every resource is released by the EXIT trap: processes started here (by PID), namespaces
# (which also removes their veth and TUN devices), the temporary directory.

set -euo pipefail

WIT_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WIT_PACKAGE_ROOT="$(cd "$WIT_HERE/../.." && pwd)"
: "${WIT_PREFIX:=wit}"
case "${WG_IMPL:-warren-wireguard}" in
    warren-wireguard) ;;
    wireguard-go) WIT_BASELINE=1 ;;
    *) WARREN_WIREGUARD="$WG_IMPL" ;;
esac
: "${WARREN_WIREGUARD:=$WIT_PACKAGE_ROOT/.build/debug/warren-wireguard}"
: "${WIT_BASELINE:=0}"
WIT_SOCKET_DIR=/var/run/wireguard

WIT_PIDS=()
WIT_NAMESPACES=()
WIT_TMP=""

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${WIT_ID:-?}" "$*"; }
fail() { log "FAIL: $*"; exit 1; }

wit_cleanup() {
    local status=$?
    set +e
    if [[ "${WIT_KEEP:-0}" == 1 ]]; then
        log "WIT_KEEP=1: leaving namespaces ${WIT_NAMESPACES[*]:-} and $WIT_TMP"
        return
    fi
    for pid in "${WIT_PIDS[@]:-}"; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null
    done
    # Processes that daemonized themselves inside our namespaces (wg-quick's userspace device).
    for ns in "${WIT_NAMESPACES[@]:-}"; do
        [[ -z "$ns" ]] && continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
    done
    sleep 0.3
    for pid in "${WIT_PIDS[@]:-}"; do
        [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null
    done
    for ns in "${WIT_NAMESPACES[@]:-}"; do
        [[ -z "$ns" ]] && continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    for iface in "${WIT_INTERFACES[@]:-}"; do
        [[ -n "$iface" ]] && rm -f "$WIT_SOCKET_DIR/$iface.sock"
    done
    if [[ -n "$WIT_TMP" && -d "$WIT_TMP" ]]; then
        if [[ $status -ne 0 ]]; then
            for f in "$WIT_TMP"/*.log; do
                [[ -f "$f" ]] || continue
                echo "----- $(basename "$f") (last 40 lines) -----"
                tail -n 40 "$f"
            done
        fi
        rm -rf "$WIT_TMP"
    fi
    exit $status
}
WIT_INTERFACES=()
trap wit_cleanup EXIT
trap 'exit 130' INT TERM

wit_require() {
    [[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
    local tool
    for tool in wg wireguard-go ip python3 "$@"; do
        command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
    done
    if [[ "$WIT_BASELINE" != 1 && ! -x "$WARREN_WIREGUARD" ]]; then
        echo "SKIP: $WARREN_WIREGUARD not built (swift build --product warren-wireguard)"
        exit 77
    fi
    umask 077
    WIT_TMP="$(mktemp -d /tmp/${WIT_PREFIX}${WIT_ID}.XXXXXX)"
    log "mode: $([[ $WIT_BASELINE == 1 ]] && echo "baseline (wireguard-go in place of Warren)" || echo "Warren = $WARREN_WIREGUARD")"
}

# The executable for an implementation name: warren or wggo.
wit_binary() {
    case "$1" in
        warren) if [[ "$WIT_BASELINE" == 1 ]]; then command -v wireguard-go; else echo "$WARREN_WIREGUARD"; fi ;;
        wggo) command -v wireguard-go ;;
        *) fail "unknown implementation $1" ;;
    esac
}

# wit_netns NAME: creates a namespace with loopback up. A namespace of the same name left behind by an
# earlier run of this scenario that was killed before its trap ran (the name carries this test's prefix)
# is removed first.
wit_netns() {
    if ip netns list | grep -qx "$1\( .*\)\?"; then
        log "removing stale namespace $1 from an earlier run"
        ip netns del "$1"
    fi
    ip netns add "$1"
    WIT_NAMESPACES+=("$1")
    ip -n "$1" link set lo up
}

# wit_link NS1 IF1 ADDR1 NS2 IF2 ADDR2: a veth pair between two namespaces with IPv4/24 addresses.
wit_link() {
    ip link add "$2" netns "$1" type veth peer name "$5" netns "$4"
    ip -n "$1" addr add "$3/24" dev "$2"
    ip -n "$4" addr add "$6/24" dev "$5"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}

# wit_start NS IFACE IMPL: starts a userspace WireGuard in the foreground inside NS, records its
# PID, waits for its UAPI socket.
wit_start() {
    local ns="$1" iface="$2" impl="$3" bin
    bin="$(wit_binary "$impl")"
    WIT_INTERFACES+=("$iface")
    ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL="${WIT_LOG_LEVEL:-verbose}" "$bin" -f "$iface" \
        >"$WIT_TMP/$iface.log" 2>&1 &
    WIT_PIDS+=($!)
    local i
    for i in $(seq 1 100); do
        [[ -S "$WIT_SOCKET_DIR/$iface.sock" ]] && ip -n "$ns" link show "$iface" >/dev/null 2>&1 && return 0
        kill -0 "$!" 2>/dev/null || fail "$impl ($bin) exited before creating $iface: $(tail -n 5 "$WIT_TMP/$iface.log")"
        sleep 0.1
    done
    fail "$impl did not create $WIT_SOCKET_DIR/$iface.sock and the $iface device within 10 s"
}

# wit_keys NAME: writes NAME.key / NAME.pub in the temp dir.
wit_keys() {
    wg genkey >"$WIT_TMP/$1.key"
    wg pubkey <"$WIT_TMP/$1.key" >"$WIT_TMP/$1.pub"
}
wit_pub() { cat "$WIT_TMP/$1.pub"; }

# wit_address NS IFACE V4 V6: inner addresses, MTU 1420, up.
wit_address() {
    ip -n "$1" addr add "$3/24" dev "$2"
    ip -n "$1" addr add "$4/64" dev "$2"
    ip -n "$1" link set "$2" mtu 1420 up
}

# wit_wg NS ARGS...: `wg` inside a namespace.
wit_wg() { local ns="$1"; shift; ip netns exec "$ns" wg "$@"; }

# wit_ping NS ADDRESS [COUNT]: a few pings that must all come back.
wit_ping() {
    local out
    if ! out="$(ip netns exec "$1" ping -n -q -c "${3:-3}" -i 0.2 -W 3 "$2" 2>&1)"; then
        echo "$out"
        fail "ping $2 from $1"
    fi
    log "ping $1 -> $2: $(echo "$out" | grep -E 'packets transmitted' || true)"
}

# wit_latest_handshake NS IFACE PUB: seconds since the epoch of the last handshake with PUB (0 = never).
wit_latest_handshake() {
    wit_wg "$1" show "$2" latest-handshakes | awk -v k="$3" '$1 == k { print $2 }'
}

# wit_transfer SRC_NS DST_NS DST_ADDR PORT BYTES [RATE]: a TCP transfer checked by SHA-256 at both ends.
wit_transfer() {
    local src="$1" dst="$2" addr="$3" port="$4" bytes="$5" rate="${6:-0}"
    ip netns exec "$dst" python3 "$WIT_HERE/tcpcheck.py" recv "$port" >"$WIT_TMP/recv-$port.out" 2>"$WIT_TMP/recv-$port.log" &
    local rpid=$!
    WIT_PIDS+=($rpid)
    sleep 0.5
    local sent
    sent="$(ip netns exec "$src" python3 "$WIT_HERE/tcpcheck.py" send "$addr" "$port" "$bytes" "$rate")" \
        || fail "sender failed"
    wait "$rpid" || fail "receiver failed: $(cat "$WIT_TMP/recv-$port.log")"
    local received
    received="$(cat "$WIT_TMP/recv-$port.out")"
    log "sent     $sent"
    log "received $received"
    [[ "$sent" == "$received" ]] || fail "transfer $src -> $dst: checksums differ"
}

# wit_show NS IFACE: prints `wg show` and checks that every peer has a handshake and traffic both ways.
wit_check_show() {
    local out
    out="$(wit_wg "$1" show "$2")"
    echo "$out" | sed "s/^/    [$1] /"
    echo "$out" | grep -q "latest handshake:" || fail "$1: no handshake in wg show"
    wit_wg "$1" show "$2" transfer | while read -r pub rx tx; do
        [[ "$rx" -gt 0 && "$tx" -gt 0 ]] || fail "$1: no traffic counted for $pub (rx $rx tx $tx)"
    done
}

# wit_pair IMPL_A IMPL_B: the standard topology. Namespaces ${PREFIX}${ID}a / ${PREFIX}${ID}b, underlay
# 10.<n>.0.1 / 10.<n>.0.2, WireGuard interfaces wit${ID}a0 / wit${ID}b0 with inner addresses
# 10.<n>.1.1 / .2 and fd00:<n>::1 / ::2, ports 51820 / 51821, each the other's peer.
wit_pair() {
    local impl_a="$1" impl_b="$2"
    WIT_N=$(( (0x$(echo -n "$WIT_ID" | sha256sum | cut -c1-4) % 200) + 20 ))
    NS_A="${WIT_PREFIX}${WIT_ID}a"; NS_B="${WIT_PREFIX}${WIT_ID}b"
    IF_A="${WIT_PREFIX}${WIT_ID}a0"; IF_B="${WIT_PREFIX}${WIT_ID}b0"
    UNDER_A="10.$WIT_N.0.1"; UNDER_B="10.$WIT_N.0.2"
    IN4_A="10.$WIT_N.1.1"; IN4_B="10.$WIT_N.1.2"
    IN6_A="fd00:$WIT_N::1"; IN6_B="fd00:$WIT_N::2"
    PORT_A=51820; PORT_B=51821
    wit_netns "$NS_A"
    wit_netns "$NS_B"
    VETH_A="${WIT_PREFIX}${WIT_ID}va"; VETH_B="${WIT_PREFIX}${WIT_ID}vb"
    wit_link "$NS_A" "$VETH_A" "$UNDER_A" "$NS_B" "$VETH_B" "$UNDER_B"
    wit_keys a
    wit_keys b
    wit_start "$NS_A" "$IF_A" "$impl_a"
    wit_start "$NS_B" "$IF_B" "$impl_b"
    wit_wg "$NS_A" set "$IF_A" private-key "$WIT_TMP/a.key" listen-port $PORT_A \
        peer "$(wit_pub b)" endpoint "$UNDER_B:$PORT_B" allowed-ips "$IN4_B/32,$IN6_B/128"
    wit_wg "$NS_B" set "$IF_B" private-key "$WIT_TMP/b.key" listen-port $PORT_B \
        peer "$(wit_pub a)" endpoint "$UNDER_A:$PORT_A" allowed-ips "$IN4_A/32,$IN6_A/128"
    wit_address "$NS_A" "$IF_A" "$IN4_A" "$IN6_A"
    wit_address "$NS_B" "$IF_B" "$IN4_B" "$IN6_B"
    log "pair up: $impl_a in $NS_A ($IF_A) <-> $impl_b in $NS_B ($IF_B)"
}
