#!/usr/bin/env bash
# glewlwyd (Debian 12's OpenID Connect provider, C, SQLite): the real provider that OIDCGlewlwydTests sign in
# through. Installed without starting its service: the test writes its own configuration and database and runs
# the binary on a loopback port of its own. A policy-rc.d that refuses every start is in place only during this
# install, and only when the host has none of its own (as scripts/setup does for prometheus).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in glewlwyd sqlite3; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -gt 0 ] || exit 0
policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/setup.d/oidc-provider.sh: no service starts during this install\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    ours=1
fi
status=0
{ apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; } || status=$?
if [ "$ours" = 1 ]; then rm -f "$policy"; fi
# The package's own service is not wanted (it would listen on glewlwyd's default port 4593 with its own database).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now glewlwyd >/dev/null 2>&1 || true
fi
exit "$status"
