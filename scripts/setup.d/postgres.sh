#!/usr/bin/env bash
# PostgreSQL for the store's tests (PostgresStoreTests, the contract tests' postgres backend, PostgresServeTests):
# Debian's server binaries (/usr/lib/postgresql/<version>/bin) and the postgres user. The tests initdb and start a
# server of their own in a temporary directory; Debian's own cluster service is not wanted running (it would take
# port 5432 and a share of memory for nothing), so the package is installed behind a policy-rc.d that refuses every
# start (in place only during this install, when the host has none of its own), and the cluster it creates stays
# down.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
. "$(dirname "$0")/../lib/install-without-services.sh"
install_without_services postgresql postgresql-client
# The package's cluster (15/main) was created but not started; keep it from starting at boot as well.
for conf in /etc/postgresql/*/main/start.conf; do
    [ -e "$conf" ] && sed -i 's/^auto$/manual/' "$conf"
done
exit 0
