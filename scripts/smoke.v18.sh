#!/usr/bin/env bash
# Blueprint section 37.9: merge, start the URE loop and exporter, check the metric, verify.
# Departures:
# - A fresh checkout has no RMB events: nothing to merge, no URE tick (the loop waits for
#   upstream events), and ure.verify would have no event to check. So when the RMB queue
#   (paths.v1_rmb of the URE config) holds nothing, the smoke first appends a bounded batch
#   of simulated events (make rmb.emit N=20, into that file) and says so: the merged v2
#   events, the URE tick and the verified event are then real. A queue that holds lines is
#   left as it is.
# - Polls with a deadline instead of `sleep 2`; reads the exporter port from the config
#   (CONFIG_URE, env override URE_EXPORTER_PORT); wants a value, not NaN (NaN is the
#   exporter's "no URE tick yet").
# - On success the processes stay running, as the blueprint's do. On failure (or Ctrl-C)
#   the smoke stops exactly the processes it started (lumen.ctl records each start in
#   LUMEN_CTL_STARTED; processes already running before the smoke stay), and exits non-zero.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
PY="$ROOT/.venv/bin/python"
MK="make -s --no-print-directory -f $ROOT/Makefile"
CONFIG_URE=${CONFIG_URE:-$ROOT/configs/ure_v18.yaml}
EMIT_N=20
WAIT_S=30

mkdir -p run
started=$(mktemp run/smoke.v18.XXXXXX.started)
outer=${LUMEN_CTL_STARTED:-}
export LUMEN_CTL_STARTED="$started"
finish() {
  local rc=$? names
  trap - EXIT INT TERM
  names=$(tac "$started" | awk 'NF && !seen[$0]++' | paste -sd ' ' -)
  if [ "$rc" -ne 0 ] && [ -n "$names" ]; then
    echo "[smoke.v18] FAIL: stopping what this smoke started: $names" >&2
    # shellcheck disable=SC2086  # one word per process name
    "$PY" -m lumen.ctl stop $names >&2 || true
  elif [ -n "$outer" ]; then
    cat "$started" >>"$outer"   # an enclosing `lumen.ctl up` stops them if it fails
  fi
  rm -f "$started"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

queue=$("$PY" -m lumen.config get "$CONFIG_URE" paths.v1_rmb)
port=$("$PY" -m lumen.config get "$CONFIG_URE" exporter.port)
if [ ! -s "$queue" ]; then
  echo "[smoke.v18] $queue is empty: appending $EMIT_N simulated RMB events (make rmb.emit N=$EMIT_N)"
  RMB_QUEUE="$queue" $MK rmb.emit N=$EMIT_N   # the file the merge reads, whatever CONFIG_RMB says
fi
$MK merge.v2
$MK trackD.start
$MK ure.exporter
ok=""
deadline=$((SECONDS + WAIT_S))   # for the first URE tick to be merged, made and exported
while [ "$SECONDS" -lt "$deadline" ]; do
  if curl -sf --max-time 2 "localhost:$port/metrics_ure" | grep -E '^ure_residual_entropy_last [0-9]'; then
    ok=1
    break
  fi
  sleep 0.1
done
if [ -z "$ok" ]; then
  echo "[smoke.v18] FAIL: no ure_residual_entropy_last value on :$port after ${WAIT_S}s" \
    "(see logs/proc/ure_loop.log, logs/proc/ure_merge.log)" >&2
  exit 1
fi
$MK ure.verify
echo "[smoke.v18] OK"
