#!/usr/bin/env bash
# Blueprint section 44: append COUNT events to logs/rmb_events.jsonl and time it.
# Departure: the blueprint appended schema-invalid lines ({"ts":"x",...}) one `echo` at a
# time; this appends valid v1 events through the emitter (batched, locked, validated),
# so the queue stays clean. `make bench` measures every stage; this is the quick one.
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/python.sh"  # ROOT, PY (.venv, checked)
CNT=${1:-500}
START=$(date +%s.%N)
"$PY" "$ROOT/rmb/rmb_emitter.py" --config "$ROOT/configs/rmb_v17.yaml" \
  --count "$CNT" --unthrottled --quiet --name bench_v18
ELAPSED=$(echo "$(date +%s.%N) - $START" | bc 2>/dev/null || python3 -c "print(round($(date +%s.%N) - $START, 3))")
echo "[bench] appended $CNT lines in ${ELAPSED}s"
