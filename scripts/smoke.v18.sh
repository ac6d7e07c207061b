#!/usr/bin/env bash
# Blueprint section 37.9: merge, start the URE loop and exporter, check the metric, verify.
# Departures: polls with a deadline instead of `sleep 2`; uses the configured exporter
# port (URE_EXPORTER_PORT); leaves the processes running, as the blueprint does.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
MK="make -s --no-print-directory -f $ROOT/Makefile"
$MK merge.v2
$MK trackD.start
$MK ure.exporter
port=$("$ROOT/.venv/bin/python" -m lumen.config get "$ROOT/configs/ure_v18.yaml" exporter.port)
ok=""
for _ in $(seq 1 150); do   # up to ~15 s for the first URE tick to be exported
  if curl -sf "localhost:$port/metrics_ure" | grep -E '^ure_residual_entropy_last [0-9]'; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "[smoke.v18] FAIL: no ure_residual_entropy_last on :$port" >&2; exit 1; }
$MK ure.verify
echo "[smoke.v18] OK"
