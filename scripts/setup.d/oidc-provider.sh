#!/usr/bin/env bash
# glewlwyd (Debian 12's OpenID Connect provider, C, SQLite): the real provider that OIDCGlewlwydTests sign in
# through. Installed without starting its service: the test writes its own configuration and database and runs
# the binary on a loopback port of its own. A policy-rc.d that refuses every start is in place only during this
# install, and only when the host has none of its own (as scripts/setup does for prometheus).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
. "$(dirname "$0")/../lib/install-without-services.sh"
install_without_services glewlwyd sqlite3
disable_service glewlwyd
