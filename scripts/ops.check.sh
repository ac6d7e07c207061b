#!/usr/bin/env bash
# Check every ops file with the real tool that consumes it. A missing tool is reported and
# skipped, unless LUMEN_REQUIRE_OPS_TOOLS=1 (CI), where it is a failure.
set -uo pipefail
source "$(dirname "$(readlink -f "$0")")/python.sh"  # ROOT, PY (.venv, checked)
cd "$ROOT"
fail=0
need() {
  if command -v "$1" >/dev/null; then return 0; fi
  if [ "${LUMEN_REQUIRE_OPS_TOOLS:-}" = 1 ]; then echo "[ops.check] FAIL: $1 is not installed"; fail=1
  else echo "[ops.check] skip: $1 is not installed"; fi
  return 1
}
run() { local name=$1; shift; if "$@" >/tmp/ops.check.$$ 2>&1; then echo "[ops.check] OK   $name";
        else echo "[ops.check] FAIL $name"; sed 's/^/    /' /tmp/ops.check.$$; fail=1; fi; rm -f /tmp/ops.check.$$; }
run "generated files current" "$PY" tools/ops_build.py --check
run "dashboards current" "$PY" tools/dashboards_v3_build.py --check
if need promtool; then
  run "promtool check config prometheus.yml" promtool check config ops/prometheus/prometheus.yml
  run "promtool check config prometheus.compose.yml" promtool check config --syntax-only ops/prometheus/prometheus.compose.yml
  run "promtool check rules" promtool check rules ops/prometheus/rules/*.rules.yml
  run "promtool test rules" bash -c "cd ops/prometheus/tests && promtool test rules rules_test.yml"
fi
if need amtool; then
  run "amtool check-config" amtool check-config ops/alertmanager/alertmanager.yml
  run "amtool check-config (compose)" amtool check-config ops/alertmanager/alertmanager.compose.yml
fi
if need docker-compose; then
  # The compose file requires GRAFANA_ADMIN_PASSWORD (no default); a placeholder renders it.
  export GRAFANA_ADMIN_PASSWORD=${GRAFANA_ADMIN_PASSWORD:-ops-check-placeholder}
  run "docker-compose config" docker-compose -f docker-compose.yml config -q
  run "docker-compose config (+ prometheus-lifecycle.yml)" \
    docker-compose -f docker-compose.yml -f ops/compose/prometheus-lifecycle.yml config -q
fi
run "kubernetes schemas (ops/k8s)" "$ROOT/.venv/bin/kubernetes-validate" ops/k8s/rmb-v17/configmap.yaml ops/k8s/rmb-v17/deploy.yaml ops/k8s/rmb-v17/service.yaml
if [ $fail = 0 ]; then echo "[ops.check] RESULT = OK"; else echo "[ops.check] RESULT = FAIL"; exit 1; fi
