#!/usr/bin/env bash
# Blueprint section 8: exporter in the background, verify, emitter in the foreground.
# Departures: waits (bounded) for the exporter to answer instead of `sleep 1`, and stops
# the exporter it started, by its PID, when the emitter exits (Ctrl-C).
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
PY=$ROOT/.venv/bin/python
CONFIG=${CONFIG_RMB:-$ROOT/configs/rmb_v17.yaml}
port=$("$PY" -m lumen.config get "$CONFIG" exporter.port)
"$PY" -u "$ROOT/exporters/rmb_exporter_v17.py" --config "$CONFIG" --name rmb_exporter_dev &
exporter_pid=$!
trap 'kill "$exporter_pid" 2>/dev/null || true; wait "$exporter_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  "$PY" -c "import sys; from lumen.ports import answers; sys.exit(0 if answers('127.0.0.1', $port) else 1)" && break
  kill -0 "$exporter_pid" 2>/dev/null || { echo "[rmb.dev] exporter failed to start" >&2; exit 1; }
  sleep 0.1
done
make -s -f "$ROOT/Makefile" rmb.verify || true
"$PY" -u "$ROOT/rmb/rmb_emitter.py" --config "$CONFIG" --name rmb_emitter_dev
