#!/usr/bin/env bash
# Blueprint section 8: validate the sample event against schemas/rmb_event_v1.json.
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/python.sh"  # ROOT, PY (.venv, checked)
"$PY" - "$ROOT" <<'PY'
import json, sys
from jsonschema import validate
import jsonschema

schema = json.load(open(sys.argv[1] + '/schemas/rmb_event_v1.json'))
line = '{"ts":"2025-11-01T00:00:00Z","entity_id":"x","group":"design_core","event_type":"observe","resonance_v3":{"phase_diff":0.1,"residual_entropy":0.3,"creative_band":"MID","risk_band":"SAFE"},"memory_bridge":{"slot_id":"rmb/v17/slot-1","op":"UPSERT","key":"k","value_hash":"deadbeef"},"trace":{"loop_id":"rmb.v17","iter":1,"host":"local"}}'
try:
  validate(instance=json.loads(line), schema=schema)
  print('[rmb.verify] RESULT = OK')
except jsonschema.exceptions.ValidationError as e:
  print('[rmb.verify] RESULT = FAIL', e)
  sys.exit(1)
PY
