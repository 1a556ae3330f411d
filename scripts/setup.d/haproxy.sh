#!/usr/bin/env bash
# haproxy (Debian 12's TCP/HTTP load balancer): the balancer in front of two warren-control instances in
# ClusterFailoverTests (issue 13 §2). Installed without starting its service: the test writes a configuration of its
# own and runs the binary in the foreground on loopback ports of its own. The package's service would otherwise start
# with /etc/haproxy/haproxy.cfg (no listeners, but a process nobody asked for), so a policy-rc.d that refuses every
# start is in place only during this install, and only when the host has none of its own (as scripts/setup does for
# prometheus).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
. "$(dirname "$0")/../lib/install-without-services.sh"
install_without_services haproxy
disable_service haproxy
