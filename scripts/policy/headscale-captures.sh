#!/bin/sh
# Measures Warren's policy compiler against headscale's Tailscale captures (hscontrol/policy/v2/testdata).
#
# Not part of CI. It reads headscale's capture files at run time from a local git mirror of juanfont/headscale
# (HEADSCALE_MIRROR, default /work/.mirror/juanfont+headscale/repo), extracts them into a temporary directory
# outside the repository, and runs the test-only HeadscaleCaptureMeasurement over them (the same comparison as
# ConformanceTests, on PolicyCompiler, PolicyEngine built whole and node by node). Nothing is copied into the repo.
# Captures whose id is also in ../shared/conformance/tailscale-policy are checked apart; the rest are the held-out set.
#
# Usage: scripts/policy/headscale-captures.sh [REPORT_FILE] [ID_SUBSTRING]
set -eu
mirror=${HEADSCALE_MIRROR:-/work/.mirror/juanfont+headscale/repo}
here=$(cd "$(dirname "$0")/../.." && pwd)
report=${1:-/tmp/warren-headscale-captures.txt}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$mirror" archive HEAD hscontrol/policy/v2/testdata | tar -x -C "$tmp"
echo "headscale $(git -C "$mirror" rev-parse --short HEAD): $(find "$tmp" -name '*.hujson' | wc -l) captures"
cd "$here"
rm -f "$report"
swift build --build-tests >/dev/null
WARREN_HEADSCALE_CAPTURES="$tmp/hscontrol/policy/v2/testdata" WARREN_HEADSCALE_REPORT="$report" \
WARREN_HEADSCALE_ONLY="${2:-}" \
    swift test --disable-swift-testing --skip-build --filter 'WarrenPolicyTests.HeadscaleCaptureMeasurement' >/dev/null 2>&1 || true
cat "$report"
