#!/usr/bin/env bash
# Blueprint section 32: package the project for deployment/backup into
# release/lumen_v17_<stamp>.tar.gz in the current directory. Exactly the listed content;
# never logs/ or data/, nor caches. A listed path that does not exist yet is an error.
set -euo pipefail
ROOT=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
STAMP=$(date +%Y%m%d_%H%M)
OUT=$(pwd)/release
T=$OUT/lumen_v17_${STAMP}.tar.gz
cd "$ROOT"
CONTENT=(schemas configs rmb exporters safety ops/grafana ops/prometheus
         tools scripts Makefile docs SESSION_RESTORE_2025-11-01_v1_7_*.env)
for p in "${CONTENT[@]}"; do
  [ -e "$p" ] || { echo "[pkg] error: $p does not exist in $ROOT" >&2; exit 1; }
done
mkdir -p "$OUT"
tar -czf "$T" --exclude='__pycache__' --exclude='*.pyc' "${CONTENT[@]}"
echo "[pkg] $T"
