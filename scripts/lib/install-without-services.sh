# Sourced by scripts/setup.d/*.sh: installs Debian packages whose services must not start (the tests run the binaries
# themselves, with configurations of their own, on loopback ports of their own).
#
# install_without_services PKG... : installs the packages not installed yet (without recommends) behind a policy-rc.d
# that refuses every start, in place only during this install and only when the host has none of its own; tries the
# install before an `apt-get update` (the lists are often fresh). Returns apt's status.
install_without_services() {
    local need=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
    done
    [ ${#need[@]} -gt 0 ] || return 0
    local policy=/usr/sbin/policy-rc.d ours=0 status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# scripts/lib/install-without-services.sh: no service starts during this install\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        ours=1
    fi
    { apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }; } || status=$?
    if [ "$ours" = 1 ]; then rm -f "$policy"; fi
    return "$status"
}

# disable_service NAME : keeps a package's service from starting at boot, where systemd runs.
disable_service() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$1" >/dev/null 2>&1 || true
    fi
}
