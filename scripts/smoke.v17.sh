#!/usr/bin/env bash
# Blueprint section 23: stop, restore, start Track B (and Track C), verify, in one go.
# Departures: waits for /metrics with a deadline instead of `sleep 3`; uses the configured
# exporter port (RMB_EXPORTER_PORT); targets of later tracks run only once they exist, and
# each skipped step is said out loud. Leaves the stack running, as the blueprint does.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
MK="make -s --no-print-directory -f $ROOT/Makefile"
has() { $MK -n "$1" >/dev/null 2>&1; }
step() { if has "$1"; then $MK "$@"; else echo "[smoke] skip: make $1 (not built yet)"; fi; }

$MK trackB.stop || true
step safety.music.stop || true
ENV_FILE="$ROOT/SESSION_RESTORE_2025-11-01_v1_7_DELTA.env"
if [ -f "$ENV_FILE" ]; then set -a; source "$ENV_FILE"; set +a; fi
step feature.v17.init
$MK validate.v17.schema
$MK trackB.start
port=$("$ROOT/.venv/bin/python" -m lumen.config get "$ROOT/configs/rmb_v17.yaml" exporter.port)
ok=""
for _ in $(seq 1 100); do   # up to ~10 s for the first events to be counted
  if curl -sf "localhost:$port/metrics" | grep -E '^rmb_events_total [1-9]'; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { echo "[smoke] FAIL: rmb_events_total did not rise on :$port" >&2; exit 1; }
$MK rmb.verify
if has safety.music.start; then
  $MK safety.music.start
  for _ in $(seq 1 100); do [ -s logs/safety_music_events.jsonl ] && break; sleep 0.1; done
  [ -s logs/safety_music_events.jsonl ] || { echo "[smoke] FAIL: no safety music events" >&2; exit 1; }
else
  echo "[smoke] skip: make safety.music.start (Track C not built yet)"
fi
echo "[smoke] OK"
