#!/usr/bin/env bash
# Data-plane benchmark: Warren's userspace WireGuard against Debian's wireguard-go, in the same run.
#
# Two network namespaces (wbna, wbnb) joined by veth pairs, and in them:
#   raw      the veth itself (offloads on, MTU 1500)
#   raw1420  a second veth pair with MTU 1420 and TSO/GSO/GRO off: what the kernel alone costs for
#            1420-byte packets one by one (the honest reference for a tunnel; see
#            ../shared/reference/dataplane-baseline.md)
#   wggo     wireguard-go <-> wireguard-go
#   warren   warren-wireguard <-> warren-wireguard
#   mixed    warren-wireguard (sending side, wbna) <-> wireguard-go (receiving side, wbnb)
#   warrend  two Warren nodes (warrend, MTU 1280) logged in to a warren-control in wbna, on the direct
#            path over the raw veth that disco finds (checked with `warren status` before measuring)
# Every tunnel runs over the raw veth with MTU 1420 inside, configured with `wg`. All tunnels stay
# up for the whole run; only one is measured at a time.
#
# Per configuration and round: iperf3 TCP with 1 and 4 streams (DURATION s after OMIT s of
# warm-up), iperf3 UDP at 500 Mbit/s and 1 Gbit/s (payload 1392 B: a full 1420-byte tunnel
# packet) with the received rate and loss, ping RTT median and p99 of PINGS echoes at
# PING_INTERVAL, and the CPU seconds of the two VPN processes (utime + stime from /proc/PID/stat,
# all threads) per GB that arrived through the tunnel. Rounds are interleaved: each test runs for
# every configuration before the next test, with the configuration order rotated each round.
#
# Prints, per configuration, the median [min-max] over the rounds, then the per-round paired
# ratios warren/wggo and mixed/wggo (and warren/raw1420 for throughput).
#
# Environment: ROUNDS (3), DURATION (10), OMIT (1), PINGS (200), PING_INTERVAL (0.01),
#   CONFIGS ("raw raw1420 wggo warren mixed warrend"), BUILD (1: swift build -c release first),
#   NODE_MTU (1280: warrend's default; 1420 measures it at the other tunnels' MTU),
#   WARREN_WIREGUARD (default .build/release/warren-wireguard), WARREN_BIN (where warrend, warren and
#   warren-control are; default swift's release bin path), RESULTS (a file to keep the raw
#   JSON lines in), KEEP=1 (leave namespaces and the work directory for debugging).
# Needs root, iperf3, wireguard-go, wg, ethtool, python3. Not a test: it only prints figures.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
: "${ROUNDS:=3}" "${DURATION:=10}" "${OMIT:=1}" "${PINGS:=200}" "${PING_INTERVAL:=0.01}"
: "${CONFIGS:=raw raw1420 wggo warren mixed warrend}"
: "${BUILD:=1}"
# warrend's TUN MTU: Tailscale's 1280 by default; 1420 compares like with like (the other tunnels' MTU).
: "${NODE_MTU:=1280}"
: "${WARREN_WIREGUARD:=$ROOT/.build/release/warren-wireguard}"
UDP_LENGTH=1392
NS_A=wbna
NS_B=wbnb
SOCKETS=/var/run/wireguard

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
umask 077
read -r -a CONFIG_LIST <<<"$CONFIGS"
needs_warren=0
needs_node=0
for c in "${CONFIG_LIST[@]}"; do
    case "$c" in
        raw | raw1420 | wggo) ;;
        warren | mixed) needs_warren=1 ;;
        warrend) needs_node=1 ;;
        *) die "unknown configuration $c (raw raw1420 wggo warren mixed warrend)" ;;
    esac
done
for tool in iperf3 wireguard-go wg ethtool python3 ping ip; do
    command -v "$tool" >/dev/null || die "$tool is not installed (scripts/setup installs it)"
done
[[ "$ROUNDS" -ge 1 ]] || die "ROUNDS must be at least 1"

if [[ $needs_warren == 1 && $BUILD == 1 ]]; then
    log "building warren-wireguard in release mode"
    (cd "$ROOT" && swift build -c release --product warren-wireguard >&2)
    WARREN_WIREGUARD="$(cd "$ROOT" && swift build -c release --show-bin-path)/warren-wireguard"
fi
[[ $needs_warren == 0 || -x "$WARREN_WIREGUARD" ]] || die "$WARREN_WIREGUARD is not built"
if [[ $needs_node == 1 ]]; then
    if [[ $BUILD == 1 ]]; then
        log "building warrend, warren and warren-control in release mode"
        (cd "$ROOT" && swift build -c release --product warrend >&2 && swift build -c release --product warren >&2 \
            && swift build -c release --product warren-control >&2)
    fi
    BIN="${WARREN_BIN:-$(cd "$ROOT" && swift build -c release --show-bin-path)}"
    for b in warrend warren warren-control; do [[ -x "$BIN/$b" ]] || die "$BIN/$b is not built"; done
fi

WORK="$(mktemp -d /tmp/wbn.XXXXXX)"
PIDS=()
IFACES=()
cleanup() {
    local status=$?
    set +e
    if [[ "${KEEP:-0}" == 1 ]]; then
        log "KEEP=1: leaving $NS_A, $NS_B and $WORK"
        exit $status
    fi
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; done
    sleep 0.3
    for pid in "${PIDS[@]:-}"; do [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null; done
    for ns in $NS_A $NS_B; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    for iface in "${IFACES[@]:-}"; do [[ -n "$iface" ]] && rm -f "$SOCKETS/$iface.sock"; done
    if [[ $status -ne 0 ]]; then
        for f in "$WORK"/*.log; do [[ -f "$f" ]] && { echo "----- $f" >&2; tail -n 20 "$f" >&2; }; done
    fi
    rm -rf "$WORK"
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ns in $NS_A $NS_B; do
    ip netns list | grep -qw "$ns" && die "namespace $ns exists already (another run, or a KEEP=1 leftover)"
done

# ---------------------------------------------------------------------------------------------
# The topology

ip netns add $NS_A
ip netns add $NS_B
ip -n $NS_A link set lo up
ip -n $NS_B link set lo up
ip link add wbnv0a netns $NS_A type veth peer name wbnv0b netns $NS_B
ip -n $NS_A addr add 10.250.0.1/24 dev wbnv0a
ip -n $NS_B addr add 10.250.0.2/24 dev wbnv0b
ip -n $NS_A link set wbnv0a up
ip -n $NS_B link set wbnv0b up
ip link add wbnv1a netns $NS_A type veth peer name wbnv1b netns $NS_B
ip -n $NS_A addr add 10.250.1.1/24 dev wbnv1a
ip -n $NS_B addr add 10.250.1.2/24 dev wbnv1b
ip -n $NS_A link set wbnv1a mtu 1420 up
ip -n $NS_B link set wbnv1b mtu 1420 up
ip netns exec $NS_A ethtool -K wbnv1a tso off gso off gro off >/dev/null
ip netns exec $NS_B ethtool -K wbnv1b tso off gso off gro off >/dev/null

# Per configuration: the address iperf3 and ping aim at, the interface in wbnb whose received
# bytes count as "moved", and the VPN process IDs.
declare -A TARGET RX_IFACE TX_IFACE VPN_PIDS
TARGET[raw]=10.250.0.2; RX_IFACE[raw]=wbnv0b; TX_IFACE[raw]=wbnv0a
TARGET[raw1420]=10.250.1.2; RX_IFACE[raw1420]=wbnv1b; TX_IFACE[raw1420]=wbnv1a

# start_vpn NS IFACE BINARY: a userspace WireGuard in the foreground; prints its PID (it runs in
# a command substitution: the caller records the PID and the interface).
start_vpn() {
    local ns="$1" iface="$2" bin="$3" i
    ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error "$bin" -f "$iface" >"$WORK/$iface.log" 2>&1 &
    local pid=$!
    for i in $(seq 1 100); do
        [[ -S "$SOCKETS/$iface.sock" ]] && ip -n "$ns" link show "$iface" >/dev/null 2>&1 && { echo "$pid"; return 0; }
        kill -0 "$pid" 2>/dev/null || die "$bin exited before creating $iface"
        sleep 0.1
    done
    die "$bin did not create $iface within 10 s"
}

# tunnel CONFIG IMPL_A IMPL_B SUBNET PORT: two userspace WireGuards, each the other's peer.
tunnel() {
    local name="$1" bin_a="$2" bin_b="$3" subnet="$4" port="$5" if_a="wbn${1:0:3}a" if_b="wbn${1:0:3}b"
    wg genkey >"$WORK/$name-a.key"; wg genkey >"$WORK/$name-b.key"
    local pub_a pub_b pid_a pid_b
    pub_a="$(wg pubkey <"$WORK/$name-a.key")"; pub_b="$(wg pubkey <"$WORK/$name-b.key")"
    IFACES+=("$if_a" "$if_b")
    pid_a="$(start_vpn $NS_A "$if_a" "$bin_a")"
    PIDS+=("$pid_a")
    pid_b="$(start_vpn $NS_B "$if_b" "$bin_b")"
    PIDS+=("$pid_b")
    ip netns exec $NS_A wg set "$if_a" private-key "$WORK/$name-a.key" listen-port "$port" \
        peer "$pub_b" endpoint "10.250.0.2:$((port + 1))" allowed-ips "$subnet.2/32"
    ip netns exec $NS_B wg set "$if_b" private-key "$WORK/$name-b.key" listen-port "$((port + 1))" \
        peer "$pub_a" endpoint "10.250.0.1:$port" allowed-ips "$subnet.1/32"
    ip -n $NS_A addr add "$subnet.1/24" dev "$if_a"
    ip -n $NS_B addr add "$subnet.2/24" dev "$if_b"
    ip -n $NS_A link set "$if_a" mtu 1420 up
    ip -n $NS_B link set "$if_b" mtu 1420 up
    TARGET[$name]="$subnet.2"; RX_IFACE[$name]="$if_b"; TX_IFACE[$name]="$if_a"; VPN_PIDS[$name]="$pid_a $pid_b"
    ip netns exec $NS_A ping -n -q -c 3 -i 0.2 -W 5 "$subnet.2" >/dev/null || die "no ping through the $name tunnel"
    log "$name: $(basename "$bin_a") in $NS_A ($if_a, pid $pid_a) <-> $(basename "$bin_b") in $NS_B ($if_b, pid $pid_b)"
}

# nodes: warren-control in wbna (listening on the raw veth), a warrend in each namespace.
nodes() {
    local yaml="$WORK/control.yaml" key i
    printf 'base_domain: bench.warren\nderp:\n  host: 10.250.0.1\n  port: 8443\n  stun_port: 3478\n' >"$yaml"
    ip netns exec $NS_A "$BIN/warren-control" serve --state-dir "$WORK/control" --listen 10.250.0.1:8080 \
        --config "$yaml" >"$WORK/control.log" 2>&1 &
    PIDS+=("$!")
    for i in $(seq 1 100); do grep -q "is serving" "$WORK/control.log" && break; sleep 0.1; done
    "$BIN/warren-control" users create bench --state-dir "$WORK/control" >/dev/null
    key="$("$BIN/warren-control" preauthkeys create --user bench --reusable --state-dir "$WORK/control")"
    local pid_a pid_b
    ip netns exec $NS_A "$BIN/warrend" --state-dir "$WORK/node-a" --socket "$WORK/node-a.sock" --tun wbnwda --port 52030 --mtu "$NODE_MTU" \
        >"$WORK/node-a.log" 2>&1 &
    pid_a=$!
    ip netns exec $NS_B "$BIN/warrend" --state-dir "$WORK/node-b" --socket "$WORK/node-b.sock" --tun wbnwdb --port 52031 --mtu "$NODE_MTU" \
        >"$WORK/node-b.log" 2>&1 &
    pid_b=$!
    PIDS+=("$pid_a" "$pid_b")
    for i in $(seq 1 100); do [[ -S "$WORK/node-a.sock" && -S "$WORK/node-b.sock" ]] && break; sleep 0.1; done
    ip netns exec $NS_A "$BIN/warren" --socket "$WORK/node-a.sock" up --accept-dns=false --login-server http://10.250.0.1:8080 --auth-key "$key" \
        --hostname bench-a >/dev/null || die "node a did not come up"
    ip netns exec $NS_B "$BIN/warren" --socket "$WORK/node-b.sock" up --accept-dns=false --login-server http://10.250.0.1:8080 --auth-key "$key" \
        --hostname bench-b >/dev/null || die "node b did not come up"
    local target
    target="$(ip netns exec $NS_B "$BIN/warren" --socket "$WORK/node-b.sock" ip -4)"
    ip netns exec $NS_A ping -n -q -c 3 -i 0.2 -W 5 "$target" >/dev/null || die "no ping through the warrend tunnel"
    # Wait for the direct path over the raw veth (not over another tunnel's addresses).
    local cur=""
    for i in $(seq 1 100); do
        ip netns exec $NS_A ping -n -q -c 1 -W 1 "$target" >/dev/null || true
        cur="$(ip netns exec $NS_A "$BIN/warren" --socket "$WORK/node-a.sock" status --json | python3 -c '
import json, sys
peers = json.load(sys.stdin).get("Peer", {})
print(next(iter(peers.values()), {}).get("CurAddr", ""))')"
        [[ "$cur" == 10.250.0.2:* ]] && break
        sleep 0.2
    done
    [[ "$cur" == 10.250.0.2:* ]] || log "warning: warrend path is '${cur:-DERP}', not the raw veth"
    TARGET[warrend]="$target"; RX_IFACE[warrend]=wbnwdb; TX_IFACE[warrend]=wbnwda; VPN_PIDS[warrend]="$pid_a $pid_b"
    log "warrend: nodes bench-a ($pid_a) <-> bench-b ($pid_b) at $target, path ${cur:-DERP}"
}

WGGO="$(command -v wireguard-go)"
for c in "${CONFIG_LIST[@]}"; do
    case "$c" in
        wggo) tunnel wggo "$WGGO" "$WGGO" 10.250.10 52000 ;;
        warren) tunnel warren "$WARREN_WIREGUARD" "$WARREN_WIREGUARD" 10.250.11 52010 ;;
        mixed) tunnel mixed "$WARREN_WIREGUARD" "$WGGO" 10.250.12 52020 ;;
        warrend) nodes ;;
    esac
done
log "wireguard-go: $("$WGGO" --version | head -1); warren-wireguard: $WARREN_WIREGUARD"
log "$ROUNDS rounds, configurations: ${CONFIG_LIST[*]}"

# ---------------------------------------------------------------------------------------------
# Measuring

# CPU seconds (utime + stime, all threads) of a list of PIDs.
cpu_seconds() {
    local total=0 pid ticks
    for pid in "$@"; do
        # Fields 14 and 15 after the ")" that ends the command name.
        ticks=$(sed 's/.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')
        total=$((total + ticks))
    done
    python3 -c "import os, sys; print(int(sys.argv[1]) / os.sysconf('SC_CLK_TCK'))" "$total"
}
rx_bytes() { ip -n $NS_B -s -j link show dev "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["bytes"])'; }
# Packets dropped at the interfaces themselves: on a TUN device, tx_dropped counts packets the
# sending VPN did not read in time (its queue overflowed); rx_dropped on the receiving side.
iface_drops() {
    ip -n "$1" -s -j link show dev "$2" | python3 -c '
import json, sys
s = json.load(sys.stdin)[0]["stats64"]
print(s["tx"]["dropped"] + s["rx"]["dropped"])'
}
rcvbuf_errors() {
    local total=0 ns n
    for ns in $NS_A $NS_B; do
        n=$(ip netns exec "$ns" awk '/^Udp:/ { if (h) print $6; h = 1 }' /proc/net/snmp)
        total=$((total + n))
    done
    echo "$total"
}

RESULTS_FILE="${RESULTS:-$WORK/results.jsonl}"
: >"$RESULTS_FILE"

# measure ROUND CONFIG TEST: one measurement, appended to the results as a JSON line.
measure() {
    local round="$1" config="$2" test="$3" target="${TARGET[$2]}" out="$WORK/$2-$3-$1"
    local pids="${VPN_PIDS[$2]:-}" cpu0=0 cpu1=0 rx0 rx1 drops0 drops1 args=() server
    case "$test" in
        tcp1) args=(-t "$DURATION" -O "$OMIT") ;;
        tcp4) args=(-t "$DURATION" -O "$OMIT" -P 4) ;;
        # No warm-up for UDP: iperf3 3.12 counts the omitted datagrams as lost.
        udp500M) args=(-t "$DURATION" -u -b 500M -l $UDP_LENGTH) ;;
        udp1G) args=(-t "$DURATION" -u -b 1G -l $UDP_LENGTH) ;;
    esac
    [[ -n "$pids" ]] && cpu0=$(cpu_seconds $pids)
    rx0=$(rx_bytes "${RX_IFACE[$config]}")
    drops0=$(rcvbuf_errors)
    local ifdrops0 ifdrops1
    ifdrops0=$(( $(iface_drops $NS_A "${TX_IFACE[$config]}") + $(iface_drops $NS_B "${RX_IFACE[$config]}") ))
    local status=0
    if [[ $test == ping ]]; then
        ip netns exec $NS_A ping -n -c "$PINGS" -i "$PING_INTERVAL" -W 1 "$target" >"$out.txt" 2>&1 || status=$?
    else
        ip netns exec $NS_B iperf3 -s -1 -p 5201 >"$WORK/iperf3-server.log" 2>&1 &
        server=$!
        PIDS+=("$server")
        sleep 0.3
        timeout $((DURATION + OMIT + 30)) ip netns exec $NS_A iperf3 -c "$target" -p 5201 -J "${args[@]}" \
            >"$out.json" 2>"$out.err" || status=$?
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    [[ -n "$pids" ]] && cpu1=$(cpu_seconds $pids)
    rx1=$(rx_bytes "${RX_IFACE[$config]}")
    drops1=$(rcvbuf_errors)
    ifdrops1=$(( $(iface_drops $NS_A "${TX_IFACE[$config]}") + $(iface_drops $NS_B "${RX_IFACE[$config]}") ))
    python3 - "$round" "$config" "$test" "$status" "$out" "$pids" "$cpu0" "$cpu1" "$rx0" "$rx1" "$drops0" "$drops1" \
        "$((ifdrops1 - ifdrops0))" \
        >>"$RESULTS_FILE" <<'PY'
import json, re, sys
round_, config, test, status, out, pids, cpu0, cpu1, rx0, rx1, d0, d1, ifdrops = sys.argv[1:]
record = {"round": int(round_), "config": config, "test": test, "ok": status == "0"}
moved = int(rx1) - int(rx0)
if pids:
    cpu = float(cpu1) - float(cpu0)
    record["cpu_s"] = cpu
    if moved > 0 and test != "ping":
        record["cpu_s_per_gb"] = cpu / (moved / 1e9)
record["moved_bytes"] = moved
record["rcvbuf_drops"] = int(d1) - int(d0)
record["iface_drops"] = int(ifdrops)
try:
    if test == "ping":
        text = open(out + ".txt").read()
        rtts = sorted(float(x) for x in re.findall(r"time=([0-9.]+) ms", text))
        sent = re.search(r"(\d+) packets transmitted", text)
        if rtts:
            import statistics
            record["rtt_p50_ms"] = statistics.median(rtts)
            # Nearest rank: the smallest RTT with at least 99 % of the echoes at or below it.
            record["rtt_p99_ms"] = rtts[-(-99 * len(rtts) // 100) - 1]
        if sent:
            record["ping_lost"] = int(sent.group(1)) - len(rtts)
    else:
        end = json.load(open(out + ".json"))["end"]
        received = end["sum_received"]
        record["gbps"] = received["bits_per_second"] / 1e9
        if test.startswith("udp"):
            record["mbps"] = received["bits_per_second"] / 1e6
            record["loss_pct"] = received["lost_percent"]
        else:
            record["retransmits"] = end["sum_sent"].get("retransmits", 0)
except Exception as error:  # a failed measurement is recorded, not fatal
    record["ok"] = False
    record["error"] = f"{type(error).__name__}: {error}"
print(json.dumps(record))
PY
    tail -n 1 "$RESULTS_FILE" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
keys = ["gbps", "loss_pct", "rtt_p50_ms", "rtt_p99_ms", "cpu_s_per_gb", "error"]
print("  round %d %-8s %-8s %s" % (r["round"], r["config"], r["test"],
      " ".join("%s=%s" % (k, round(r[k], 3) if isinstance(r[k], float) else r[k]) for k in keys if k in r)))' >&2
}

TESTS=(tcp1 tcp4 udp500M udp1G ping)
n=${#CONFIG_LIST[@]}
for round in $(seq 1 "$ROUNDS"); do
    log "round $round of $ROUNDS"
    for test in "${TESTS[@]}"; do
        for i in $(seq 0 $((n - 1))); do
            config="${CONFIG_LIST[$(((i + round - 1) % n))]}"
            measure "$round" "$config" "$test"
        done
    done
done

# Idle: the VPN processes must not spin. CPU over 3 s with no traffic.
IDLE=()
for c in "${CONFIG_LIST[@]}"; do
    [[ -n "${VPN_PIDS[$c]:-}" ]] || continue
    before=$(cpu_seconds ${VPN_PIDS[$c]})
    sleep 3
    after=$(cpu_seconds ${VPN_PIDS[$c]})
    IDLE+=("$c=$(python3 -c "print(round(($after - $before) / 3 * 100, 1))")")
done

# ---------------------------------------------------------------------------------------------
# The report

python3 - "$RESULTS_FILE" "$ROUNDS" "$DURATION" "$PINGS" "${IDLE[*]:-}" "${CONFIG_LIST[@]}" <<'PY'
import json, statistics, sys
path, rounds, duration, pings, idle = sys.argv[1:6]
configs = sys.argv[6:]
records = [json.loads(line) for line in open(path) if line.strip()]
def values(config, test, key):
    return [r[key] for r in records if r["config"] == config and r["test"] == test and key in r and r["ok"]]
def by_round(config, test, key):
    return {r["round"]: r[key] for r in records if r["config"] == config and r["test"] == test and key in r and r["ok"]}
def fmt(xs, digits):
    if not xs:
        return "-"
    m = statistics.median(xs)
    if len(xs) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{min(xs):.{digits}f}-{max(xs):.{digits}f}]"
rows = [
    ("TCP 1 stream, Gbit/s", "tcp1", "gbps", 2),
    ("TCP 4 streams, Gbit/s", "tcp4", "gbps", 2),
    ("UDP 500M, received Mbit/s", "udp500M", "mbps", 0),
    ("UDP 500M, loss %", "udp500M", "loss_pct", 2),
    ("UDP 1G, received Mbit/s", "udp1G", "mbps", 0),
    ("UDP 1G, loss %", "udp1G", "loss_pct", 2),
    (f"ping RTT p50, ms ({pings} echoes)", "ping", "rtt_p50_ms", 3),
    (f"ping RTT p99, ms", "ping", "rtt_p99_ms", 3),
    ("CPU s per GB, TCP 1 stream", "tcp1", "cpu_s_per_gb", 2),
    ("CPU s per GB, TCP 4 streams", "tcp4", "cpu_s_per_gb", 2),
    ("CPU s per GB, UDP 500M", "udp500M", "cpu_s_per_gb", 2),
    ("CPU s per GB, UDP 1G", "udp1G", "cpu_s_per_gb", 2),
    ("UDP rcvbuf drops, TCP 1 stream", "tcp1", "rcvbuf_drops", 0),
    ("UDP rcvbuf drops, UDP 1G", "udp1G", "rcvbuf_drops", 0),
    ("interface drops (TUN queue), UDP 500M", "udp500M", "iface_drops", 0),
    ("interface drops (TUN queue), UDP 1G", "udp1G", "iface_drops", 0),
]
names = {"raw": "raw veth", "raw1420": "raw 1420 no-offload", "wggo": "wireguard-go", "warren": "Warren", "warrend": "warrend (node)",
         "mixed": "Warren->wireguard-go"}
print()
print(f"Data plane, {rounds} rounds interleaved, {duration} s per iperf3 test; median [min-max] over the rounds")
print("(CPU = utime+stime of both VPN processes per GB received through the tunnel; lower is better)")
print()
print("| metric | " + " | ".join(names.get(c, c) for c in configs) + " |")
print("|---|" + "---|" * len(configs))
for label, test, key, digits in rows:
    print(f"| {label} | " + " | ".join(fmt(values(c, test, key), digits) for c in configs) + " |")
failed = [r for r in records if not r["ok"]]
print()
ratio_pairs = [(a, b) for a, b in [("warren", "wggo"), ("mixed", "wggo"), ("warren", "raw1420"), ("warrend", "warren"),
                                   ("warrend", "wggo")] if a in configs and b in configs]
if ratio_pairs:
    print("Paired per-round ratios, median [min-max] (throughput: higher is better; RTT and CPU: lower is better)")
    print()
    print("| metric | " + " | ".join(f"{names[a]} / {names[b]}" for a, b in ratio_pairs) + " |")
    print("|---|" + "---|" * len(ratio_pairs))
    for label, test, key, digits in rows:
        if key in ("loss_pct", "rcvbuf_drops", "iface_drops"):
            continue
        cells = []
        for a, b in ratio_pairs:
            if b == "raw1420" and key != "gbps" and key != "mbps":
                cells.append("-")
                continue
            ra, rb = by_round(a, test, key), by_round(b, test, key)
            ratios = [ra[r] / rb[r] for r in ra if r in rb and rb[r]]
            cells.append(fmt(ratios, 2))
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()
if idle:
    print("Idle CPU of the VPN processes over 3 s (% of one core): " + idle)
if failed:
    print(f"{len(failed)} measurement(s) failed:")
    for r in failed:
        print(f"  round {r['round']} {r['config']} {r['test']}: {r.get('error', 'the command failed')}")
PY
