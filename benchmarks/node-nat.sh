#!/usr/bin/env bash
# NAT lab benchmark: two warrend nodes behind routers that do different kinds of NAT (nftables in network
# namespaces), warren-control with its relay and STUN in an "internet" namespace. For each pair of NAT types it
# prints the time from `warren up` on both nodes to the first ICMP echo answered through the tunnel, and to the
# first direct path (Peer.CurAddr in `warren status --json`, polled every 50 ms), plus the path that carried a
# burst of traffic according to nft counters in the internet namespace (not the nodes' own word).
#
# Usage (root): benchmarks/node-nat.sh [--debug] [--no-build] [--keep-logs] [PAIR ...]
#   PAIR is TYPE-TYPE with TYPE one of none, cone (endpoint-independent mapping and filtering),
#   prc (port-restricted cone: Linux masquerade), sym (endpoint-dependent mapping: masquerade fully-random),
#   udpblock (UDP not forwarded); or "lan" (two nodes behind one prc router).
# Everything it creates is prefixed wnlb-<pid>; it is removed on exit (logs kept only when a pair fails).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=release
BUILD=1
KEEP_LOGS=0
while [[ ${1:-} == --* ]]; do
    case $1 in
        --debug) MODE=debug ;;
        --no-build) BUILD=0 ;;
        --keep-logs) KEEP_LOGS=1 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
PAIRS=("$@")
[[ ${#PAIRS[@]} -gt 0 ]] || PAIRS=(none-none cone-cone prc-prc prc-cone cone-sym none-sym prc-sym sym-sym prc-udpblock none-udpblock sym-udpblock lan)
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces, nftables)" >&2; exit 1; }
for tool in ip nft ping python3; do command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }; done

if [[ $BUILD == 1 ]]; then
    for product in warrend warren warren-control; do
        (cd "$ROOT" && swift build -c $MODE --product $product 2>&1 | tail -1)
    done
fi
# WARREN_BIN: where the three binaries are (default: the build directory of the mode).
B=${WARREN_BIN:-$ROOT/.build/$MODE}
P=wnlb-$$
DIR=$(mktemp -d /tmp/wnlb-XXXXXX)
NAMESPACES=()
PIDS=()
KEEP=$KEEP_LOGS

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [[ $KEEP == 1 ]]; then echo "logs kept in $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }
mk_ns() {
    ip netns add "$P-$1"
    NAMESPACES+=("$P-$1")
    in_ns "$1" ip link set lo up
}
# veth from bridge $2 in namespace $1 to interface $4 in namespace $3
wire() {
    local a=wnlb$$a b=wnlb$$b
    ip link add $a type veth peer name $b
    ip link set $a netns "$P-$1"
    ip link set $b netns "$P-$3"
    in_ns "$1" ip link set $a name "v$3" master "$2" up
    in_ns "$3" ip link set $b name "$4" up
}

# The internet: a bridge with warren-control (control 8080, DERP 8443, STUN 3478) at 203.0.113.1, and the oracle:
# counters of UDP between two WAN addresses (bridge forward) and TCP to the relay port per WAN address.
mk_ns inet
in_ns inet ip link add br0 type bridge
in_ns inet ip addr add 203.0.113.1/24 dev br0
in_ns inet ip link set br0 up
in_ns inet nft -f - <<'EOF'
table bridge wnl {
    chain fw {
        type filter hook forward priority 0;
    }
}
table ip wnl {
    chain in {
        type filter hook input priority 0;
    }
    chain out {
        type filter hook output priority 0;
    }
}
EOF
cat > "$DIR/control.yaml" <<EOF
base_domain: lab.warren
derp:
  host: 203.0.113.1
  port: 8443
  stun_port: 3478
EOF
in_ns inet "$B/warren-control" serve --state-dir "$DIR/control" --listen 203.0.113.1:8080 --config "$DIR/control.yaml" \
    >"$DIR/control.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do grep -q "is serving" "$DIR/control.log" && break; sleep 0.1; done
grep -q "is serving" "$DIR/control.log" || { KEEP=1; echo "warren-control did not start" >&2; exit 1; }
"$B/warren-control" users create lab --state-dir "$DIR/control" >/dev/null
KEY=$("$B/warren-control" preauthkeys create --user lab --reusable --state-dir "$DIR/control")

# A router of NAT type $2 for slot $1: WAN 203.0.113.$1 on the internet bridge, LAN bridge 10.$1.0.1/24.
mk_router() {
    local slot=$1 type=$2 r=r$1 wan=203.0.113.$1
    mk_ns $r
    wire inet br0 $r wan
    in_ns $r ip addr add $wan/24 dev wan
    in_ns $r ip link add lan type bridge
    in_ns $r ip addr add 10.$slot.0.1/24 dev lan
    in_ns $r ip link set lan up
    in_ns $r sysctl -qw net.ipv4.ip_forward=1
    local post="oifname \"wan\" masquerade" pre="" fw=""
    case $type in
        prc) ;;
        cone) post="oifname \"wan\" ip saddr 10.$slot.0.2 udp sport 41641 snat to $wan:50041
                    oifname \"wan\" masquerade"
              pre="iifname \"wan\" udp dport 50041 dnat to 10.$slot.0.2:41641" ;;
        sym) post="oifname \"wan\" masquerade fully-random" ;;
        udpblock) fw="meta l4proto udp drop" ;;
        *) echo "unknown NAT type $type" >&2; exit 2 ;;
    esac
    in_ns $r nft -f - <<EOF
table ip wnl {
    chain post {
        type nat hook postrouting priority srcnat;
        $post
    }
    chain pre {
        type nat hook prerouting priority dstnat;
        $pre
    }
    chain fw {
        type filter hook forward priority 0;
        $fw
    }
    # Like a home router's firewall: nothing new comes in to the router itself. Without this, a peer's
    # first hole-punching packet (arriving before our node sent anything) leaves a confirmed conntrack entry
    # for the router's own port, and masquerade then moves our node's mapping to a random port.
    chain in {
        type filter hook input priority 0;
        iifname "wan" ct state new drop
    }
}
EOF
}

# Node $1 (a namespace) behind router slot $2 as host .$3, or on the internet with address 203.0.113.$2 when $3 is "none".
mk_node() {
    local n=$1 slot=$2 host=$3
    mk_ns $n
    if [[ $host == none ]]; then
        wire inet br0 $n eth0
        in_ns $n ip addr add 203.0.113.$slot/24 dev eth0
    else
        wire r$slot lan $n eth0
        in_ns $n ip addr add 10.$slot.0.$host/24 dev eth0
        in_ns $n ip route add default via 10.$slot.0.1
    fi
    mkdir -p "$DIR/$n"
    in_ns $n "$B/warrend" --state-dir "$DIR/$n" --socket "$DIR/$n.sock" --tun warren0 --verbose >"$DIR/$n.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do [[ -S $DIR/$n.sock ]] && break; sleep 0.1; done
}

counter() { # family name -> bytes
    in_ns inet nft list counter "$1" wnl "$2" | awk '/bytes/ {print $4}'
}

# Counters for a pair whose WAN addresses are $2 and $3, named after $1.
add_oracle() {
    local id=$1 a=$2 b=$3
    in_ns inet nft add counter bridge wnl "udp_$id"
    in_ns inet nft add rule bridge wnl fw ip saddr "{ $a, $b }" ip daddr "{ $a, $b }" meta l4proto udp counter name "udp_$id"
    in_ns inet nft add counter ip wnl "derp_$id"
    in_ns inet nft add rule ip wnl in ip saddr "{ $a, $b }" tcp dport 8443 counter name "derp_$id"
    in_ns inet nft add rule ip wnl out ip daddr "{ $a, $b }" tcp sport 8443 counter name "derp_$id"
}

peer_curaddr() { # node -> CurAddr of its only online peer from the current pair ($2: peer's tailnet IP)
    in_ns "$1" "$B/warren" --socket "$DIR/$1.sock" status --json 2>/dev/null | python3 -c '
import json, sys
ip = sys.argv[1]
try:
    s = json.load(sys.stdin)
except Exception:
    sys.exit(0)
for p in (s.get("Peer") or {}).values():
    if ip in (p.get("TailscaleIPs") or []):
        print(p.get("CurAddr") or "")
' "$2"
}

tailnet_ip() {
    for _ in $(seq 200); do
        local ip
        ip=$(in_ns "$1" "$B/warren" --socket "$DIR/$1.sock" ip -4 2>/dev/null || true)
        [[ $ip == 100.* ]] && { echo "$ip"; return; }
        sleep 0.05
    done
}

printf "%-14s %-8s %12s %12s %10s %10s\n" pair path first_pkt_s direct_s udp_kB derp_kB
slot=0
for pair in "${PAIRS[@]}"; do
    slot=$((slot + 10))
    a=a$slot b=b$slot
    if [[ $pair == lan ]]; then
        mk_router $((slot + 1)) prc
        mk_node $a $((slot + 1)) 2
        mk_node $b $((slot + 1)) 3
        wan_a=203.0.113.$((slot + 1)); wan_b=$wan_a
        in_ns r$((slot + 1)) nft -f - <<EOF
table bridge wnl {
    counter lanudp { }
    chain fw {
        type filter hook forward priority 0;
        ip saddr 10.$((slot + 1)).0.0/24 ip daddr 10.$((slot + 1)).0.0/24 meta l4proto udp counter name lanudp
    }
}
EOF
    else
        ta=${pair%-*} tb=${pair#*-}
        for side in 1 2; do
            t=$ta; n=$a
            [[ $side == 2 ]] && { t=$tb; n=$b; }
            if [[ $t == none ]]; then mk_node $n $((slot + side)) none; else mk_router $((slot + side)) $t; mk_node $n $((slot + side)) 2; fi
        done
        wan_a=203.0.113.$((slot + 1)); wan_b=203.0.113.$((slot + 2))
    fi
    add_oracle "p$slot" $wan_a $wan_b
    t0=$(now)
    in_ns $a "$B/warren" --socket "$DIR/$a.sock" up --accept-dns=false --login-server http://203.0.113.1:8080 --auth-key "$KEY" --hostname "$a" >/dev/null 2>&1 &
    up_a=$!
    in_ns $b "$B/warren" --socket "$DIR/$b.sock" up --accept-dns=false --login-server http://203.0.113.1:8080 --auth-key "$KEY" --hostname "$b" >/dev/null 2>&1 &
    up_b=$!
    ip_b=$(tailnet_ip $b)
    wait $up_a $up_b || true
    # First packet: ping every 50 ms until the first echo reply (ping -D prints each reply's time).
    first=""
    in_ns $a ping -D -n -i 0.05 -W 1 -w 30 -c 1 "$ip_b" >"$DIR/$a.firstping" 2>&1 || true
    first=$(awk -F'[][]' '/bytes from/ {print $2; exit}' "$DIR/$a.firstping")
    # Direct path: poll CurAddr every 50 ms while a gentle ping keeps the tunnel in use.
    in_ns $a ping -n -q -i 0.2 -w 20 "$ip_b" >/dev/null 2>&1 &
    keepalive=$!
    direct=""
    deadline=$(( $(date +%s) + 20 ))
    while [[ $(date +%s) -lt $deadline ]]; do
        if [[ -n $(peer_curaddr $a "$ip_b") ]]; then direct=$(now); break; fi
        sleep 0.05
    done
    kill $keepalive 2>/dev/null || true; wait $keepalive 2>/dev/null || true
    # The oracle: bytes of a 100 x 1000-byte ping burst, by path.
    u0=$(counter bridge "udp_p$slot"); d0=$(counter ip "derp_p$slot")
    in_ns $a ping -n -q -c 100 -i 0.01 -s 1000 "$ip_b" >/dev/null 2>&1 || true
    u1=$(counter bridge "udp_p$slot"); d1=$(counter ip "derp_p$slot")
    if [[ $pair == lan ]]; then
        u0=0; u1=$(in_ns r$((slot + 1)) nft list counter bridge wnl lanudp | awk '/bytes/ {print $4}')
    fi
    du=$(( (u1 - u0) / 1000 )); dd=$(( (d1 - d0) / 1000 ))
    path=none
    if (( du >= 150 && dd < 50 )); then path=direct; elif (( dd >= 150 )); then path=DERP; fi
    fs=-; ds=-
    [[ -n $first ]] && fs=$(python3 -c "print(f'{$first - $t0:.2f}')")
    [[ -n $direct ]] && ds=$(python3 -c "print(f'{$direct - $t0:.2f}')")
    [[ -n $first ]] || KEEP=1
    printf "%-14s %-8s %12s %12s %10s %10s\n" "$pair" "$path" "$fs" "$ds" "$du" "$dd"
    if [[ -n ${WNLB_HOLD:-} ]]; then echo "holding $WNLB_HOLD s: namespaces $P-*, logs $DIR" >&2; sleep "$WNLB_HOLD"; fi
done
