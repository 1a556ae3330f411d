#!/usr/bin/env bash
# Subnet router, exit node and MagicDNS benchmark (issue 10, section 5). Not a test: run it on demand as root.
#
# Lab (network namespaces; no NAT anywhere, so every tunnel takes the direct path: C's CurAddr for the far end is
# read halfway through each run and printed):
#   inet  bridge br0 203.0.113.0/24: warren-control at .1 (control 8080, DERP 8443, STUN 3478) and the lab's
#         upstream DNS server at .53 (nsd, authoritative for example.com: www.example.com A 192.0.2.80)
#   c     client node C    203.0.113.10  (--accept-routes; later --exit-node=E)
#   p     peer node P      203.0.113.11  (iperf3 server; C aims at P's tailnet address)
#   r     subnet router R  203.0.113.12, eth1 192.168.50.1 (--advertise-routes=192.168.50.0/24, approved)
#   e     exit node E      203.0.113.13, eth1 192.0.2.1 (--advertise-exit-node, 0.0.0.0/0 and ::/0 approved)
#   lan   LAN host H       192.168.50.10 (bridge br1, R's eth1 on it; iperf3 server)
#   gw    the internet beyond E: 192.0.2.254 towards E, host X 198.51.100.10 (iperf3 server); only E reaches it
# Every namespace gets its own /etc/netns/<ns>/resolv.conf naming 203.0.113.53, so MagicDNS on C forwards there
# (the host's upstream as it read it) and no warrend ever looks at the host's /etc/resolv.conf; all nodes run
# with --accept-dns=false (MagicDNS still answers on 100.100.100.100; the namespace's file is left alone).
#
# Throughput: iperf3 TCP from C, DURATION s (after 1 s omitted), 1 stream and 4 streams, to
#   (a) P's tailnet address (node to node), (b) H through R, (c) X through E, and as a reference
#   (d) H from R itself over the plain veth (no tunnel).
# CPU per run: the machine's busy share (/proc/stat, 100% = every core) and the CPU of the two warrend processes
# on the path (utime + stime of all threads, % of one core).
# MagicDNS, from C with dnsperf (QUERIES outstanding, DNS_SECONDS s each): (a) tailnet names answered by
# MagicDNS, (b) www.example.com forwarded by MagicDNS to the lab upstream, (c) the same upstream queried
# directly (C's own resolver path without Warren). p99 from dnsperf -v's per-query latencies.
#
# Usage (root): benchmarks/routes-dns.sh [--debug] [--no-build] [--keep-logs]
#   WARREN_BIN: where warrend, warren and warren-control are (default: the build directory of the mode).
#   SCRATCH_PATH: swift build's --scratch-path (default .build; e.g. .build-release to keep off the debug build's lock).
#   DURATION (10), DNS_SECONDS (10), QUERIES (32).
# Needs ip, nft, iperf3, python3, dig; installs nsd and dnsperf with apt-get when they are missing.
# Everything it creates is named wrdb-<pid> (namespaces, /etc/netns/wrdb-<pid>-*, /tmp/wrdb-*) and removed on exit
# (the work directory with the logs is kept only on failure or with --keep-logs).
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
: "${DURATION:=10}" "${DNS_SECONDS:=10}" "${QUERIES:=32}"
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces, nftables)" >&2; exit 1; }
for tool in ip nft ping python3 iperf3 dig; do command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }; done
missing=()
command -v nsd >/dev/null || missing+=(nsd)
command -v dnsperf >/dev/null || missing+=(dnsperf)
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

SCRATCH_PATH=${SCRATCH_PATH:-$ROOT/.build}
if [[ $BUILD == 1 ]]; then
    for product in warrend warren warren-control; do
        (cd "$ROOT" && swift build -c $MODE --scratch-path "$SCRATCH_PATH" --product $product 2>&1 | tail -1) >&2
    done
fi
B=${WARREN_BIN:-$SCRATCH_PATH/$MODE}
for b in warrend warren warren-control; do [[ -x $B/$b ]] || { echo "$B/$b is not built" >&2; exit 1; }; done
P=wrdb-$$
HP=wrdb$$
DIR=$(mktemp -d /tmp/wrdb-XXXXXX)
NAMESPACES=()
PIDS=()
KEEP=$KEEP_LOGS
WIRES=0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; KEEP=1; exit 1; }

exec 3>&2
cleanup() {
    local status=$? pid ns
    # A trap can run inside a redirected command (iperf3's output file): back to the script's own stderr.
    exec 2>&3
    set +e
    [[ $status != 0 ]] && KEEP=1
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    done
    if [[ $KEEP == 1 ]]; then
        for f in "$DIR"/*.log; do [[ -s $f ]] && { echo "----- $f" >&2; tail -n 15 "$f" >&2; }; done
        echo "logs kept in $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }
# spawn NS LOG COMMAND...: in the background; SPAWNED is its PID (ip netns exec execs the command).
spawn() {
    local ns=$1 logfile=$2
    shift 2
    ip netns exec "$P-$ns" "$@" >>"$logfile" 2>&1 &
    SPAWNED=$!
    PIDS+=($SPAWNED)
}
mk_ns() {
    ip netns add "$P-$1"
    NAMESPACES+=("$P-$1")
    mkdir -p "/etc/netns/$P-$1"
    printf '# routes-dns benchmark lab\nnameserver 203.0.113.53\noptions timeout:2 attempts:1\n' >"/etc/netns/$P-$1/resolv.conf"
    in_ns "$1" ip link set lo up
}
# wire NS_BRIDGE BRIDGE NS IFACE: a veth from bridge BRIDGE in NS_BRIDGE to IFACE in NS.
wire() {
    WIRES=$((WIRES + 1))
    local a=${HP}a$WIRES b=${HP}b$WIRES
    ip link add "$a" type veth peer name "$b"
    ip link set "$a" netns "$P-$1"
    ip link set "$b" netns "$P-$3"
    in_ns "$1" ip link set "$a" name "v-$3" master "$2" up
    in_ns "$3" ip link set "$b" name "$4" up
}
warren() { local n=$1; shift; in_ns "$n" "$B/warren" --socket "$DIR/$n.sock" "$@"; }
control() { "$B/warren-control" "$@" --state-dir "$DIR/control"; }

# ---------------------------------------------------------------------------------------------------------
# The internet: warren-control and the upstream DNS server.
log "lab $P, binaries from $B, work directory $DIR"
mk_ns inet
in_ns inet ip link add br0 type bridge
in_ns inet ip addr add 203.0.113.1/24 dev br0
in_ns inet ip addr add 203.0.113.53/24 dev br0
in_ns inet ip link set br0 up
cat >"$DIR/control.yaml" <<EOF
base_domain: bench.warren
derp:
  host: 203.0.113.1
  port: 8443
  stun_port: 3478
EOF
spawn inet "$DIR/control.log" "$B/warren-control" serve --state-dir "$DIR/control" --listen 203.0.113.1:8080 --config "$DIR/control.yaml"
for _ in $(seq 300); do grep -q "is serving" "$DIR/control.log" && break; sleep 0.1; done
grep -q "is serving" "$DIR/control.log" || die "warren-control did not start"
control users create bench >/dev/null
KEY=$(control preauthkeys create --user bench --reusable)

# nsd: one server process (nsd -d still forks it), authoritative for example.com, no privileges dropped, everything in $DIR/nsd.
mkdir -p "$DIR/nsd"
cat >"$DIR/nsd/example.com.zone" <<'EOF'
$ORIGIN example.com.
$TTL 300
@    IN SOA ns.example.com. hostmaster.example.com. 1 3600 900 604800 300
@    IN NS  ns.example.com.
ns   IN A   203.0.113.53
www  IN A   192.0.2.80
EOF
cat >"$DIR/nsd/nsd.conf" <<EOF
server:
    ip-address: 203.0.113.53
    port: 53
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$DIR/nsd"
    database: ""
    zonelistfile: "$DIR/nsd/zone.list"
    xfrdfile: "$DIR/nsd/xfrd.state"
    xfrdir: "$DIR/nsd"
    pidfile: "$DIR/nsd/nsd.pid"
    logfile: "$DIR/nsd.log"
    hide-version: yes
    verbosity: 0
    # No response rate limiting (its default, 200 answers a second per /24, would be the bottleneck).
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: example.com
    zonefile: example.com.zone
EOF
spawn inet "$DIR/nsd.log" nsd -d -c "$DIR/nsd/nsd.conf"
for _ in $(seq 50); do
    [[ $(in_ns inet dig @203.0.113.53 +short +time=1 +tries=1 www.example.com 2>/dev/null) == 192.0.2.80 ]] && break
    sleep 0.2
done
[[ $(in_ns inet dig @203.0.113.53 +short +time=1 +tries=1 www.example.com) == 192.0.2.80 ]] || die "nsd does not answer"

# ---------------------------------------------------------------------------------------------------------
# The nodes, all on br0.
declare -A WARREND_PID TAILNET_IP
mk_node() { # name host-number
    local n=$1
    mk_ns "$n"
    wire inet br0 "$n" eth0
    in_ns "$n" ip addr add "203.0.113.$2/24" dev eth0
    mkdir -p "$DIR/$n"
    spawn "$n" "$DIR/$n.log" "$B/warrend" --state-dir "$DIR/$n" --socket "$DIR/$n.sock" --tun warren0
    WARREND_PID[$n]=$SPAWNED
    for _ in $(seq 100); do [[ -S $DIR/$n.sock ]] && break; sleep 0.1; done
    [[ -S $DIR/$n.sock ]] || die "warrend $n did not open its socket"
}
up() { # name flags...
    local n=$1 ip=""
    shift
    warren "$n" up --accept-dns=false --login-server http://203.0.113.1:8080 --auth-key "$KEY" --hostname "$n" "$@" >/dev/null
    for _ in $(seq 150); do
        ip=$(warren "$n" ip -4 2>/dev/null || true)
        [[ $ip == 100.* ]] && break
        sleep 0.1
    done
    [[ $ip == 100.* ]] || die "$n got no tailnet address"
    TAILNET_IP[$n]=$ip
}

mk_node c 10
mk_node p 11
mk_node r 12
mk_node e 13

mk_ns lan
in_ns lan ip link add br1 type bridge
in_ns lan ip addr add 192.168.50.10/24 dev br1
in_ns lan ip link set br1 up
wire lan br1 r eth1
in_ns r ip addr add 192.168.50.1/24 dev eth1

mk_ns gw
in_ns gw ip link add bra type bridge
in_ns gw ip addr add 192.0.2.254/24 dev bra
in_ns gw ip link set bra up
in_ns gw ip link add brx type bridge
in_ns gw ip addr add 198.51.100.10/24 dev brx
in_ns gw ip link set brx up
wire gw bra e eth1
in_ns e ip addr add 192.0.2.1/24 dev eth1
in_ns e ip route add default via 192.0.2.254

up p
up r --advertise-routes=192.168.50.0/24
up e --advertise-exit-node
control nodes approve-routes r --routes 192.168.50.0/24 >/dev/null
control nodes approve-routes e --routes 0.0.0.0/0,::/0 >/dev/null
up c --accept-routes
log "tailnet: c ${TAILNET_IP[c]}, p ${TAILNET_IP[p]}, r ${TAILNET_IP[r]}, e ${TAILNET_IP[e]}"

# iperf3 servers: on P (any address; C aims at its tailnet address), H and X.
spawn p "$DIR/iperf-p.log" iperf3 -s
spawn lan "$DIR/iperf-h.log" iperf3 -s -B 192.168.50.10
spawn gw "$DIR/iperf-x.log" iperf3 -s -B 198.51.100.10

wait_ping() { # ns address seconds
    local deadline=$(( $(date +%s) + $3 ))
    while (( $(date +%s) < deadline )); do
        in_ns "$1" ping -n -q -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}
wait_ping c "${TAILNET_IP[p]}" 20 || die "C cannot ping P through the tunnel"
wait_ping c 192.168.50.10 20 || die "C cannot reach H through R (route approved, --accept-routes)"
in_ns c ping -n -q -c 1 -W 1 198.51.100.10 >/dev/null 2>&1 && die "C reaches X without an exit node: the lab leaks"

# The path C uses to a peer: CurAddr from `warren status --json` (empty: relayed over DERP).
curaddr() { # peer
    warren c status --json 2>/dev/null | python3 -c '
import json, sys
ip = sys.argv[1]
try:
    s = json.load(sys.stdin)
except Exception:
    sys.exit(0)
for p in (s.get("Peer") or {}).values():
    if ip in (p.get("TailscaleIPs") or []):
        print(p.get("CurAddr") or "")
' "${TAILNET_IP[$1]}"
}
declare -A PATH_OF
wait_direct() { # peer
    local addr="" deadline=$(( $(date +%s) + 20 ))
    in_ns c ping -n -q -i 0.2 -w 20 "${TAILNET_IP[$1]}" >/dev/null 2>&1 &
    local keepalive=$!
    while (( $(date +%s) < deadline )); do
        addr=$(curaddr "$1")
        [[ -n $addr ]] && break
        sleep 0.1
    done
    kill $keepalive 2>/dev/null || true; wait $keepalive 2>/dev/null || true
    PATH_OF[$1]=${addr:-DERP}
    [[ -n $addr ]] || die "C has no direct path to $1 after 20 s (CurAddr empty)"
}
for n in p r e; do wait_direct $n; done
log "paths from C: p ${PATH_OF[p]}, r ${PATH_OF[r]}, e ${PATH_OF[e]} (direct)"

# ---------------------------------------------------------------------------------------------------------
# Measurement helpers.
cpu_total() { awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat; } # "all idle" in jiffies
proc_cpu() { # pids... -> utime+stime jiffies summed
    local sum=0 pid
    for pid in "$@"; do
        [[ -r /proc/$pid/stat ]] || continue
        sum=$((sum + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat")))
    done
    echo $sum
}
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
CPU_BUSY="" CPU_VPN=""
cpu_begin() { read -r T0 I0 < <(cpu_total); V0=$(proc_cpu "$@"); W0=$(date +%s.%N); }
cpu_end() {
    local t1 i1 v1 w1
    read -r t1 i1 < <(cpu_total); v1=$(proc_cpu "$@"); w1=$(date +%s.%N)
    CPU_BUSY=$(python3 -c "print(f'{100 * (1 - ($i1 - $I0) / max(1, $t1 - $T0)):.0f}')")
    CPU_VPN=$(python3 -c "print(f'{100 * ($v1 - $V0) / $HZ / ($w1 - $W0):.0f}')")
}

declare -A TP TP_BUSY TP_VPN TP_PATH
# tput KEY STREAMS NS TARGET PEER PIDS...: one iperf3 run (TCP, DURATION s after 1 s omitted) from NS to TARGET;
# halfway through, C's CurAddr for PEER (the tunnel's far end; "-" for no tunnel) is read into TP_PATH.
tput() {
    local key=$1 streams=$2 ns=$3 target=$4 peer=$5 out="$DIR/iperf-$1-$2.json" sampler=""
    shift 5
    rm -f "$DIR/path-$key-$streams"
    if [[ $peer != - ]]; then
        (sleep $((DURATION / 2 + 1)); curaddr "$peer" >"$DIR/path-$key-$streams") &
        sampler=$!
    fi
    cpu_begin "$@"
    if ! in_ns "$ns" iperf3 -c "$target" -t "$DURATION" -O 1 -P "$streams" -J >"$out" 2>&1; then
        cpu_end "$@"
        TP[$key.$streams]=failed
        KEEP=1
        log "iperf3 $key -P $streams failed: $(head -c 300 "$out")"
    else
        cpu_end "$@"
        TP[$key.$streams]=$(python3 -c 'import json, sys; print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$out")
    fi
    TP_BUSY[$key.$streams]=$CPU_BUSY
    TP_VPN[$key.$streams]=$CPU_VPN
    TP_PATH[$key.$streams]=-
    if [[ -n $sampler ]]; then
        wait "$sampler" || true
        TP_PATH[$key.$streams]=$(cat "$DIR/path-$key-$streams" 2>/dev/null || true)
        if [[ -z ${TP_PATH[$key.$streams]} ]]; then
            TP_PATH[$key.$streams]=DERP
            KEEP=1
            log "warning: C's CurAddr for $peer was empty halfway through $key -P $streams (relayed?)"
        fi
    fi
    log "$key -P $streams: ${TP[$key.$streams]} Gbit/s, path ${TP_PATH[$key.$streams]} (machine ${CPU_BUSY}% busy, warrend ${CPU_VPN}% of a core)"
}

declare -A DNS_QPS DNS_P50 DNS_P99 DNS_LOST DNS_BUSY DNS_VPN
# dns KEY SERVER NAMEFILE PIDS...: dnsperf from C, QUERIES outstanding, DNS_SECONDS s.
dns() {
    local key=$1 server=$2 names=$3 out="$DIR/dnsperf-$1.txt"
    shift 3
    cpu_begin "$@"
    in_ns c dnsperf -s "$server" -d "$names" -l "$DNS_SECONDS" -q "$QUERIES" -c 1 -t 2 -v >"$out" 2>&1 || true
    cpu_end "$@"
    read -r DNS_QPS[$key] DNS_P50[$key] DNS_P99[$key] DNS_LOST[$key] < <(python3 - "$out" <<'EOF'
import re, sys
qps, lost, lat, errors = "-", "-", [], 0
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"> (\S+) \S+ \S+ ([0-9.]+)$", line.strip())
    if m:
        lat.append(float(m.group(2)))
        errors += m.group(1) not in ("NOERROR",)
        continue
    m = re.search(r"Queries per second:\s+([0-9.]+)", line)
    if m: qps = f"{float(m.group(1)):.0f}"
    m = re.search(r"Queries lost:\s+(\d+)", line)
    if m: lost = m.group(1)
lat.sort()
def pct(p): return f"{lat[min(len(lat) - 1, int(p * len(lat)))] * 1000:.2f}" if lat else "-"
print(qps, pct(0.50), pct(0.99), f"{lost}/{errors}")
EOF
)
    DNS_BUSY[$key]=$CPU_BUSY
    DNS_VPN[$key]=$CPU_VPN
    log "dns $key: ${DNS_QPS[$key]} q/s, p50 ${DNS_P50[$key]} ms, p99 ${DNS_P99[$key]} ms, lost/errors ${DNS_LOST[$key]} (machine ${CPU_BUSY}% busy, warrend ${CPU_VPN}% of a core)"
    [[ ${DNS_QPS[$key]} != - ]] || { KEEP=1; log "dnsperf $key printed no result: $(tail -c 300 "$out")"; }
}

# ---------------------------------------------------------------------------------------------------------
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# MagicDNS first (no exit node yet: with one, forwarded DNS would follow it).
for _ in $(seq 50); do
    [[ $(in_ns c dig @100.100.100.100 +short +time=1 +tries=1 p.bench.warren 2>/dev/null) == "${TAILNET_IP[p]}" ]] && break
    sleep 0.2
done
[[ $(in_ns c dig @100.100.100.100 +short +time=1 +tries=1 p.bench.warren) == "${TAILNET_IP[p]}" ]] || die "MagicDNS on C does not answer p.bench.warren"
[[ $(in_ns c dig @100.100.100.100 +short +time=2 +tries=1 www.example.com) == 192.0.2.80 ]] || die "MagicDNS on C does not forward www.example.com"
[[ $(in_ns c dig +short +time=2 +tries=1 www.example.com) == 192.0.2.80 ]] || die "C's own resolver path does not reach the upstream"
printf '%s A\n' c.bench.warren p.bench.warren r.bench.warren e.bench.warren >"$DIR/names-tailnet"
printf 'www.example.com A\n' >"$DIR/names-forwarded"
dns tailnet 100.100.100.100 "$DIR/names-tailnet" "${WARREND_PID[c]}"
dns forwarded 100.100.100.100 "$DIR/names-forwarded" "${WARREND_PID[c]}"
dns upstream 203.0.113.53 "$DIR/names-forwarded" "${WARREND_PID[c]}"

# Throughput: direct tunnel, subnet router, the LAN without the tunnel.
for s in 1 4; do tput node $s c "${TAILNET_IP[p]}" p "${WARREND_PID[c]}" "${WARREND_PID[p]}"; done
for s in 1 4; do tput subnet $s c 192.168.50.10 r "${WARREND_PID[c]}" "${WARREND_PID[r]}"; done
for s in 1 4; do tput lan $s r 192.168.50.10 -; done

# The exit node.
up c --accept-routes --exit-node="${TAILNET_IP[e]}"
wait_ping c 198.51.100.10 20 || die "C cannot reach X through the exit node"
PATH_OF[e]=$(curaddr e)
[[ -n ${PATH_OF[e]} ]] || wait_direct e
for s in 1 4; do tput exit $s c 198.51.100.10 e "${WARREND_PID[c]}" "${WARREND_PID[e]}"; done

# ---------------------------------------------------------------------------------------------------------
DIRECTNESS="all direct"
for k in "${!TP_PATH[@]}"; do [[ ${TP_PATH[$k]} != DERP ]] || DIRECTNESS="NOT ALL DIRECT (DERP: figures not comparable)"; done
echo
echo "routes-dns benchmark ($MODE, $(nproc) cores, $(date +%F)); all nodes on one bridge, no NAT"
echo "C's path to the tunnel's far end (CurAddr in warren status --json, read halfway through each run): $DIRECTNESS"
echo "load average before the runs: $LOAD_BEFORE (the machine is shared; compare rows of one run, not across runs)"
echo
echo "Throughput, iperf3 TCP from C, ${DURATION} s after 1 s omitted (Gbit/s; CPU: machine busy % of all $NCPU cores / both warrend % of one core)"
printf "%-44s %9s %7s %9s %9s %7s %9s  %s\n" path "1 stream" "vs (a)" "cpu" "4 streams" "vs (a)" "cpu" "CurAddr (1 / 4 streams)"
ratio() { # KEY STREAMS -> this path's throughput over node to node's
    python3 -c 'import sys
try: print("%.2f" % (float(sys.argv[1]) / float(sys.argv[2])))
except (ValueError, ZeroDivisionError): print("-")' "${TP[$1.$2]:-}" "${TP[node.$2]:-}"
}
row() {
    local key=$1 label=$2
    local path=${TP_PATH[$key.1]:--}
    [[ ${TP_PATH[$key.4]:--} == "$path" ]] || path="$path / ${TP_PATH[$key.4]:--}"
    printf "%-44s %9s %7s %9s %9s %7s %9s  %s\n" "$label" "${TP[$key.1]:--}" "$(ratio "$key" 1)" "${TP_BUSY[$key.1]:--}/${TP_VPN[$key.1]:--}" \
        "${TP[$key.4]:--}" "$(ratio "$key" 4)" "${TP_BUSY[$key.4]:--}/${TP_VPN[$key.4]:--}" "$path"
}
row node "(a) C -> P tailnet IP (node to node)"
row subnet "(b) C -> H 192.168.50.10 via subnet router R"
row exit "(c) C -> X 198.51.100.10 via exit node E"
row lan "(d) R -> H without the tunnel (reference)"
echo
echo "MagicDNS from C, dnsperf UDP, $QUERIES outstanding, ${DNS_SECONDS} s (latency ms; CPU: machine busy % / C's warrend % of one core)"
printf "%-52s %9s %8s %8s %12s %10s\n" queries "q/s" p50 p99 "lost/errors" cpu
drow() {
    local key=$1 label=$2
    printf "%-52s %9s %8s %8s %12s %10s\n" "$label" "${DNS_QPS[$key]}" "${DNS_P50[$key]}" "${DNS_P99[$key]}" "${DNS_LOST[$key]}" \
        "${DNS_BUSY[$key]}/${DNS_VPN[$key]}"
}
drow tailnet "(a) tailnet names @100.100.100.100 (MagicDNS)"
drow forwarded "(b) www.example.com @100.100.100.100 -> nsd"
drow upstream "(c) www.example.com @203.0.113.53 (nsd, no Warren)"
