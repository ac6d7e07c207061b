#!/usr/bin/env bash
# Track C dev loop (blueprint section 13): validate the config, render a short sample of
# each level so you can hear them, then run the Safety Music loop in the foreground
# (Ctrl-C stops it and writes its checkpoint).
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/python.sh"  # ROOT, PY (.venv, checked)
CONFIG=${CONFIG_SAFETY:-$ROOT/configs/safety_music_v17.yaml}
"$PY" -m lumen.config check "$CONFIG"
"$PY" -u "$ROOT/safety/safety_music_loop.py" --config "$CONFIG" --name safety_music_dev
