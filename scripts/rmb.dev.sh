#!/usr/bin/env bash
# Blueprint section 8: exporter in the background, verify, emitter in the foreground.
# Departures: the exporter runs under this directory's supervisord (lumen.ctl, like every
# background process) and `start` returns once it answers, instead of `sleep 1`; it is
# stopped the same way when the emitter exits (Ctrl-C).
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/python.sh"  # ROOT, PY (.venv, checked)
CONFIG=${CONFIG_RMB:-$ROOT/configs/rmb_v17.yaml}
port=$("$PY" -m lumen.config get "$CONFIG" exporter.port)
"$PY" -m lumen.ctl start rmb_exporter_dev --port "$port" -- \
  "$PY" -u "$ROOT/exporters/rmb_exporter_v17.py" --config "$CONFIG" --name rmb_exporter_dev
trap '"$PY" -m lumen.ctl stop rmb_exporter_dev >/dev/null || true' EXIT
make -s -f "$ROOT/Makefile" rmb.verify || true
"$PY" -u "$ROOT/rmb/rmb_emitter.py" --config "$CONFIG" --name rmb_emitter_dev
