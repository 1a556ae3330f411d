#!/usr/bin/env bash
# haproxy (Debian 12's TCP/HTTP load balancer): the balancer in front of two warren-control instances in
# ClusterFailoverTests (issue 13 §2). Installed without starting its service: the test writes a configuration of its
# own and runs the binary in the foreground on loopback ports of its own. The package's service would otherwise start
# with /etc/haproxy/haproxy.cfg (no listeners, but a process nobody asked for), so a policy-rc.d that refuses every
# start is in place only during this install, and only when the host has none of its own (as scripts/setup does for
# prometheus).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in haproxy; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -gt 0 ] || exit 0
policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/setup.d/haproxy.sh: no service starts during this install\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    ours=1
fi
status=0
{ apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; } || status=$?
if [ "$ours" = 1 ]; then rm -f "$policy"; fi
# Not wanted at boot either, where systemd runs.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now haproxy >/dev/null 2>&1 || true
fi
exit "$status"
