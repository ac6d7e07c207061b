#!/usr/bin/env bash
# Blueprint section 45: the session restore verifier. Run from anywhere.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
source "$ROOT/SESSION_RESTORE_2025-11-01_v1_7_FULL.env"
[ -f "$ROOT/schemas/rmb_event_v1.json" ] || { echo 'no schema v1'; exit 1; }
[ -f "$ROOT/schemas/resonance_event_v2.json" ] || { echo 'no schema v2'; exit 1; }
echo '[sanity] schemas ok'
