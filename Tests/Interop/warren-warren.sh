#!/usr/bin/env bash
# Scenario b: Warren on both sides; otherwise the same checks as warren-wggo.sh.
WIT_ID="${WIT_ID:-wb}" WIT_IMPL_A=warren WIT_IMPL_B=warren exec bash "$(dirname "$0")/warren-wggo.sh"
