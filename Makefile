# Lumen — the Makefile is the menu: `make help` lists every target.
# Code and configs are found next to this Makefile ($(ROOT)); state (logs/, run/, data/)
# lives in the current directory, so `make -f /path/to/Makefile ...` runs a private stack.
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)
CTL := $(PY) -m lumen.ctl
CONFIG_RMB ?= $(ROOT)/configs/rmb_v17.yaml
CONFIG_TRACKA ?= $(ROOT)/configs/trackA_v17.yaml
CONFIG_SAFETY ?= $(ROOT)/configs/safety_music_v17.yaml
CONFIG_URE ?= $(ROOT)/configs/ure_v18.yaml
SCRAPE_FILE ?= $(ROOT)/ops/prometheus/scrape.yml
CONFIG_API ?= $(ROOT)/configs/api_v18.yaml
CONFIG_ALERTS ?= $(ROOT)/configs/alert_receiver_v18.yaml
MINUTES ?= 2
TRACKA = $(PY) $(ROOT)/tools/tracka_v17.py --config $(CONFIG_TRACKA) --rmb-config $(CONFIG_RMB)
# Ports and hosts resolved from the configs (env overrides such as RMB_EXPORTER_PORT
# applied): each group is looked up once per make run, and only by a target that uses it.
# A bad config is its one error line; make then stops (status 2) before anything starts.
# (Names differ from the env variables, e.g. API_PORT, so make never re-exports them.)
GET := $(PY) -m lumen.config get
define lookup_once
$(eval $1 := $(shell $2))$(if $(filter-out 0,$(.SHELLSTATUS)),$(error stopped: could not resolve ports from the configs (the line above)))$($1)
endef
CFG_RMB = $(call lookup_once,CFG_RMB,$(GET) $(CONFIG_RMB) exporter.port)
CFG_URE = $(call lookup_once,CFG_URE,$(GET) $(CONFIG_URE) exporter.port)
CFG_API = $(call lookup_once,CFG_API,$(GET) $(CONFIG_API) api.port && $(GET) $(CONFIG_API) api.host)
CFG_FAKE = $(call lookup_once,CFG_FAKE,$(GET) $(CONFIG_TRACKA) exporter.port && \
	$(GET) $(CONFIG_TRACKA) exporter.host && $(GET) $(CONFIG_TRACKA) stream)
RMB_PORT = $(CFG_RMB)
URE_PORT = $(CFG_URE)
API_LISTEN_PORT = $(word 1,$(CFG_API))
API_LISTEN_HOST = $(word 2,$(CFG_API))
CFG_ALERTS = $(call lookup_once,CFG_ALERTS,$(GET) $(CONFIG_ALERTS) receiver.port && \
	$(GET) $(CONFIG_ALERTS) receiver.host && $(GET) $(CONFIG_ALERTS) receiver.path)
ALERTS_PORT = $(word 1,$(CFG_ALERTS))
ALERTS_HOST = $(word 2,$(CFG_ALERTS))
ALERTS_PATH = $(word 3,$(CFG_ALERTS))
FAKE_PORT = $(word 1,$(CFG_FAKE))
FAKE_HOST = $(word 2,$(CFG_FAKE))
FAKE_STREAM = $(word 3,$(CFG_FAKE))
UP_TARGETS = trackB.start safety.music.start trackD.start ure.exporter db.init db.ingest api.readonly
UP_TARGETS += alerts.receiver
N ?= 100
# The emitter's simulated profile for make up / trackB.start / serve.rmb.emit (seed, steady,
# spike, jitter, rollbacks); empty: the emitter's default (steady). A value that is not a
# profile stops make (one line, status 2) before anything starts.
PROFILE ?=
EMITTER_PROFILES = $(shell $(PY) -c 'from lumen.simulate import PROFILES; print(*PROFILES)')
CHECK_PROFILE = $(if $(PROFILE),$(if $(and $(filter 1,$(words $(PROFILE))),$(filter \
	$(PROFILE),$(EMITTER_PROFILES))),,$(error PROFILE=$(PROFILE) is not a profile of the \
	emitter ($(EMITTER_PROFILES)))))
# make logs: NAME= one process' log (default: all of this directory's), LINES= how many of
# each log's last lines to show first, FOLLOW=0 print them and exit instead of following.
LINES ?= 20
FOLLOW ?= 1
NAME ?=
# make validate.v17.schema: VERBOSE=1 prints each check's line, not only the summary.
VERBOSE ?=
ALERTMANAGER_URL ?= http://localhost:9093
PROMETHEUS_URL ?= http://localhost:9090
LOG_RETENTION_DAYS ?= 7
SOAK_EVENTS ?= 5000000
CODE_DIRS = lumen rmb exporters safety ure api tools tests bench
SHELL := /bin/bash

.DEFAULT_GOAL := help
.PHONY: help venv up down logs status test bench lint fmt clean \
	trackB.start trackB.stop rmb.emit rmb.verify rmb.dev serve.rmb.emit exporter.v17.rmb \
	validate.v17.schema rmb.bridge smoke.v17 \
	feature.v17.init dashboards.v3.build metrics.fake.v17 exporter.v17.serve \
	slo.report kpi.snapshot trackA.exit tune.suggest evidence.map kpi.reporter \
	restore.pack restore.sanity pkg.v17 logs.rotate \
	safety.music.start safety.music.stop safety.music.render safety.dev \
	merge.v2 trackD.start trackD.stop ure.exporter ure.exporter.stop ure.verify tune.v18 \
	smoke.v18 rollback.v17 switch.v18 db.init db.ingest db.ingest.stop db.backfill \
	api.readonly api.stop health ops.build ops.check alert.reload prom.reload soak docs.shot

help: ## list every target with a one-line description
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-22s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: $(ROOT)/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '$(ROOT)[test]'
	@touch $@

venv: $(VENV)/.installed ## create .venv and install Lumen with its dependencies

# ---------------------------------------------------------------- the stack
up: venv ## set up, start the stack on the default configs (under supervisord), print where to look (PROFILE=spike: the emitter's profile)
	@$(CHECK_PROFILE)$(PY) -m lumen.config check $(CONFIG_RMB) $(CONFIG_TRACKA) $(CONFIG_SAFETY) $(CONFIG_URE) \
		$(CONFIG_API) >/dev/null
	@$(CTL) up -- $(MAKE) -s --no-print-directory -f $(ROOT)/Makefile $(UP_TARGETS) \
		'CFG_RMB=$(CFG_RMB)' 'CFG_URE=$(CFG_URE)' 'CFG_API=$(CFG_API)'
	@echo
	@echo "Lumen is up:"
	@echo "  metrics   http://127.0.0.1:$(RMB_PORT)/metrics"
	@echo "  events    logs/rmb_events.jsonl   (rejects: logs/rejects/)"
	@echo "  safety    logs/safety_music_events.jsonl   (hear it: make safety.music.render)"
	@echo "  URE       http://127.0.0.1:$(URE_PORT)/metrics_ure   (v2 log: logs/resonance_events_v2.jsonl)"
	@echo "  live page http://$(API_LISTEN_HOST):$(API_LISTEN_PORT)/   (charts, SLO verdicts, newest events)"
	@echo "  API       http://$(API_LISTEN_HOST):$(API_LISTEN_PORT)/api/rmb:last   (OpenAPI: /openapi.json, store: $(if $(LUMEN_DB_URL),PostgreSQL at LUMEN_DB_URL as $(or $(LUMEN_HOST_ID),this host),data/lumen.db))"
	@echo "  alerts    http://$(ALERTS_HOST):$(ALERTS_PORT)$(ALERTS_PATH)   (Alertmanager's webhook; log: logs/alerts.jsonl)"
	@echo "  processes make status   (supervised: crashes restart; logs in logs/proc/)   stop: make down"

down: ## stop every process started here, then its supervisord (nothing running: success)
	@if [ -x $(PY) ] && $(PY) -c 'import lumen.ctl' 2>/dev/null; then $(CTL) stop --all; \
	elif [ -f run/supervisord.pid ] && kill -0 "$$(cat run/supervisord.pid)" 2>/dev/null; then \
		echo "error: supervisord (pid $$(cat run/supervisord.pid)) runs here, but $(VENV) cannot" \
			"run Lumen: run make venv, then make down" >&2; exit 1; \
	else echo "[ctl] nothing running (no usable $(VENV))"; fi

logs: venv ## follow this directory's process logs (logs/proc/*.log) like tail -F; NAME=rmb_exporter: one; LINES=20; FOLLOW=0: print and exit
	@$(CTL) logs $(NAME) --lines $(LINES) $(if $(filter 0 no false,$(FOLLOW)),--no-follow)

status: venv ## each process: state, pid, uptime, restarts, last exit, port, log
	@$(CTL) status

test: lint ## set up, lint, and run the whole test suite
	@$(PY) -m pytest $(ROOT)/tests $(PYTEST_ARGS)

bench: venv ## measure throughput and latency of each stage (table in bench/results.md)
	@$(PY) $(ROOT)/bench/bench.py

soak: venv ## full stack under load, SIGKILLs, rotations, bad lines, then the long model check (SOAK_EVENTS, SOAK_HOG=cpu|disk|cpu,disk)
	@$(PY) -u $(ROOT)/tools/soak.py --events $(SOAK_EVENTS) $(if $(SOAK_HOG),--hog $(SOAK_HOG),)
	@$(PY) -u $(ROOT)/tools/model_check.py --long --seeds 1-10

lint: venv ## ruff lint and format check of every code folder (changes nothing; `make fmt` fixes)
	@cd $(ROOT) && ruff check --no-cache -q $(CODE_DIRS) && ruff format --no-cache --check -q $(CODE_DIRS) \
		&& echo "[lint] OK"

fmt: venv ## format every code folder with ruff and apply its safe lint fixes
	@cd $(ROOT) && ruff format --no-cache -q $(CODE_DIRS) && ruff check --no-cache -q --fix $(CODE_DIRS)

clean: down ## stop everything and remove logs/, run/, data/ here
	@rm -rf logs run data

# ------------------------------------------------------ Track B — Resonance Memory Bridge
validate.v17.schema: venv ## validate schemas, configs and tests/fixtures/rmb_sample.json (VERBOSE=1: each check)
	@$(PY) $(ROOT)/tools/validate_v17_schema.py $(if $(filter-out 0,$(VERBOSE)),--verbose)

trackB.start: validate.v17.schema ## start RMB exporter + emitter in the background (PROFILE=spike: the emitter's profile)
	@$(CHECK_PROFILE)echo "[trackB] starting RMB exporter + emitter"
	@$(CTL) start rmb_exporter --port $(RMB_PORT) -- \
		$(PY) -u $(ROOT)/exporters/rmb_exporter_v17.py --config $(CONFIG_RMB)
	@$(CTL) start rmb_emitter -- $(PY) -u $(ROOT)/rmb/rmb_emitter.py --config $(CONFIG_RMB) \
		$(if $(PROFILE),--profile $(PROFILE))
	@echo "[trackB] RESULT = STARTED"

trackB.stop: venv ## stop RMB exporter + emitter (via supervisord)
	@$(CTL) stop rmb_emitter rmb_exporter
	@echo "[trackB] RESULT = STOPPED"

serve.rmb.emit: venv ## run the emitter in the foreground (Ctrl-C stops it; PROFILE= as for up)
	$(CHECK_PROFILE)$(PY) -u $(ROOT)/rmb/rmb_emitter.py --config $(CONFIG_RMB) $(if $(PROFILE),--profile $(PROFILE))

exporter.v17.rmb: venv ## run the exporter in the foreground on :9409
	$(PY) -u $(ROOT)/exporters/rmb_exporter_v17.py --config $(CONFIG_RMB) --port $(RMB_PORT)

rmb.emit: venv ## emit a bounded batch of N events (default 100) at full speed
	@$(PY) -u $(ROOT)/rmb/rmb_emitter.py --config $(CONFIG_RMB) --count $(N) --unthrottled --name rmb_emit

rmb.verify: venv ## validate the blueprint's sample event: [rmb.verify] RESULT = OK
	@cd $(ROOT) && bash scripts/rmb.verify.sh

rmb.dev: venv ## dev loop: exporter in the background, verify, emitter in the foreground
	@bash $(ROOT)/scripts/rmb.dev.sh

rmb.bridge: venv ## apply committed memory-bridge ops to the key-value store (data/rmb_bridge.db)
	@$(PY) -u $(ROOT)/rmb/bridge_v17.py --config $(CONFIG_RMB) apply

smoke.v17: venv ## stop/start/verify in one go (scripts/smoke.v17.sh)
	@bash $(ROOT)/scripts/smoke.v17.sh

# ------------------------------------------------------------- Track A — restore / exit
feature.v17.init: venv ## create logs/ data/ run/ and check Python and dependencies
	@$(TRACKA) init

dashboards.v3.build: venv ## render ops/grafana/dashboards.src.yaml into dashboard JSON
	@$(PY) $(ROOT)/tools/dashboards_v3_build.py

metrics.fake.v17: venv ## write a seeded fake v1 stream covering the last 10 min (FAKE_PROFILE=...)
	@$(TRACKA) fake

exporter.v17.serve: venv ## serve the fake stream's metrics in the background (:9408) until make down
	@$(CTL) start rmb_exporter_fake --port $(FAKE_PORT) --host $(FAKE_HOST) -- \
		$(PY) -u $(ROOT)/exporters/rmb_exporter_v17.py --config $(CONFIG_RMB) \
		--queue $(FAKE_STREAM) --port $(FAKE_PORT) --host $(FAKE_HOST) --name rmb_exporter_fake

# slo.report exits non-zero unless PASS (1 FAIL, 3 NO_DATA: make says Error 1/3, exit 2).
# Asked together with trackA.exit (section 0: make slo.report kpi.snapshot trackA.exit), a
# FAIL or NO_DATA does not stop make there: kpi.snapshot records the verdict and the gate,
# trackA.exit, fails on it with every reason listed (a bad config still stops at once).
slo.report: venv ## SLO verdicts (RMB-ROLL-001, RMB-RES-002) over 10 min of event time: exit 0 only on PASS
	@$(TRACKA) slo$(if $(filter trackA.exit,$(MAKECMDGOALS)), || [ $$? -ne 2 ])

kpi.snapshot: venv ## append a KPI row to logs/kpi_snapshot_v17.csv
	@$(TRACKA) kpi

trackA.exit: venv ## gate on init, dashboards, schemas, SLOs, KPI, exporter: [exit] RESULT = PASS|FAIL
	@$(TRACKA) exit

# ------------------------------------------------------------------ v1.7 operator tools
tune.suggest: venv ## residual stddev + rollback ratio of the last 10 min, with suggestions
	@$(PY) -u $(ROOT)/tools/tuner_v17.py --config $(CONFIG_RMB)

evidence.map: venv ## map new RMB events to logs/evidence_bundle.jsonl (exactly once)
	@$(PY) -u $(ROOT)/tools/evidence_mapper_v17.py --config $(CONFIG_RMB)

kpi.reporter: venv ## summarise logs/kpi_snapshot_v17.csv
	@$(PY) -u $(ROOT)/tools/kpi_reporter_v17.py --config $(CONFIG_RMB)

restore.pack: venv ## write today's SESSION_RESTORE_<date>_v1_7_DELTA.env here
	@bash $(ROOT)/scripts/restore.pack

restore.sanity: ## check the restore env and both event schemas
	@bash $(ROOT)/scripts/restore.sanity.sh

SHOT_MINUTES ?= 3
docs.shot: venv ## the README's screenshot: a private stack for SHOT_MINUTES (3), the live page in headless Chromium -> docs/live_page.png
	@$(PY) -u $(ROOT)/tools/live_page_shot.py --minutes $(SHOT_MINUTES)

pkg.v17: ## package schemas, configs, code, ops, docs into release/lumen_v17_<stamp>.tar.gz
	@bash $(ROOT)/scripts/pkg.v17.sh

logs.rotate: ## rotate the JSONL logs with real logrotate (rename + delaycompress), state in run/
	@command -v logrotate >/dev/null || { echo "error: logrotate is not installed (apt-get install logrotate)" >&2; exit 1; }
	@mkdir -p run
	@sed -e 's#^logs/#$(CURDIR)/logs/#' -e 's#^\( *rotate\) 7$$#\1 $(LOG_RETENTION_DAYS)#' \
		$(ROOT)/ops/logrotate/rmb_v17.logrotate > run/logrotate.conf
	@logrotate -f -s run/logrotate.state run/logrotate.conf
	@echo "[logs.rotate] RESULT = ROTATED (keep $(LOG_RETENTION_DAYS))"

# ------------------------------------------------------------------ Track C — Safety Music
safety.music.start: venv ## start the Safety Music loop in the background
	@echo "[safety] music loop start"
	@$(CTL) start safety_music -- $(PY) -u $(ROOT)/safety/safety_music_loop.py --config $(CONFIG_SAFETY)

safety.music.stop: venv ## stop the Safety Music loop (via supervisord)
	@$(CTL) stop safety_music
	@echo "[safety] music loop stop"

safety.music.render: venv ## render the last MINUTES (2) of safety music to logs/safety_music_render.wav/.mid
	@$(PY) -u $(ROOT)/safety/safety_music_render.py --config $(CONFIG_SAFETY) --minutes $(MINUTES)

safety.dev: venv ## run the Safety Music loop in the foreground (scripts/safety.dev.sh)
	@bash $(ROOT)/scripts/safety.dev.sh

# ------------------------------------------------------- v1.8 Unified Resonance Engine
merge.v2: venv ## merge new RMB + Safety Music events into logs/resonance_events_v2.jsonl (once)
	@$(PY) -u $(ROOT)/tools/merge_rmb_safety_v2.py --config $(CONFIG_URE)

# No one-shot merge.v2 first: the follower merges whatever is not merged yet when it starts
# (exactly once), so `make merge.v2 && make trackD.start` (section 48) merges once, says once.
trackD.start: venv ## start the merge (follow mode) and the URE loop in the background
	@echo "[trackD] Unified Resonance Engine starting"
	@$(CTL) start ure_merge -- $(PY) -u $(ROOT)/tools/merge_rmb_safety_v2.py --config $(CONFIG_URE) --follow
	@$(CTL) start ure_loop -- $(PY) -u $(ROOT)/ure/ure_loop_v18.py --config $(CONFIG_URE)
	@echo "[trackD] RESULT = STARTED"

trackD.stop: venv ## stop the URE loop and the merge (via supervisord)
	@$(CTL) stop ure_loop ure_merge
	@echo "[trackD] RESULT = STOPPED"

ure.exporter: venv ## start the URE exporter (:9410 /metrics_ure) in the background
	@$(CTL) start ure_exporter --port $(URE_PORT) -- $(PY) -u $(ROOT)/exporters/ure_exporter_v18.py --config $(CONFIG_URE)

ure.exporter.stop: venv ## stop the URE exporter
	@$(CTL) stop ure_exporter

ure.verify: venv ## validate the newest v2 event and the last 100: [ure.verify] OK
	@$(PY) -u $(ROOT)/tools/ure_verify_v18.py --config $(CONFIG_URE)

tune.v18: venv ## residual stddev of the last 10 min of the v2 log, with a suggestion
	@$(PY) -u $(ROOT)/tools/tuner_v18.py --config $(CONFIG_URE)

smoke.v18: venv ## merge, loop, exporter, verify in one go (20 events first if the queue is empty; scripts/smoke.v18.sh)
	@bash $(ROOT)/scripts/smoke.v18.sh

rollback.v17: venv ## 37.10: stop v1.8, turn off the ure_v18 scrape job, Track B + C back up
	@$(MAKE) -s -f $(ROOT)/Makefile trackD.stop ure.exporter.stop
	@$(PY) $(ROOT)/tools/scrape_toggle.py --file $(SCRAPE_FILE) --disable ure_v18
	@$(PY) $(ROOT)/tools/ops_build.py --scrape $(SCRAPE_FILE) --prometheus-out $(dir $(SCRAPE_FILE))prometheus.yml
	@$(MAKE) -s -f $(ROOT)/Makefile trackB.start safety.music.start
	@echo "[rollback.v17] RESULT = ROLLED_BACK (reload Prometheus to apply the scrape change)"

switch.v18: venv ## back to v1.8: scrape job on, merge + URE loop + URE exporter started
	@$(PY) $(ROOT)/tools/scrape_toggle.py --file $(SCRAPE_FILE) --enable ure_v18
	@$(PY) $(ROOT)/tools/ops_build.py --scrape $(SCRAPE_FILE) --prometheus-out $(dir $(SCRAPE_FILE))prometheus.yml
	@$(MAKE) -s -f $(ROOT)/Makefile trackD.start ure.exporter
	@echo "[switch.v18] RESULT = SWITCHED"

# ------------------------------------------------------------------ storage and API
db.init: venv ## create or migrate the SQLite store (data/lumen.db): [sqlite] init ok
	@$(PY) -u $(ROOT)/tools/storage/sqlite_init_v17_18.py --config $(CONFIG_API)

db.ingest: db.init ## start the ingester (both logs -> SQLite, exactly once) in the background
	@$(CTL) start ingest -- $(PY) -u $(ROOT)/tools/storage/ingest_tail_v18.py --config $(CONFIG_API)

db.ingest.stop: venv ## stop the ingester
	@$(CTL) stop ingest

db.backfill: db.init ## ingest what the logs hold now, with progress, then exit
	@$(PY) -u $(ROOT)/tools/storage/ingest_tail_v18.py --config $(CONFIG_API) --once --name backfill

api.readonly: venv ## start the read-only API (:8088) in the background
	@$(CTL) start api --port $(API_LISTEN_PORT) --host $(API_LISTEN_HOST) -- \
		$(PY) -u $(ROOT)/api/read_only.py --config $(CONFIG_API)

api.stop: venv ## stop the read-only API
	@$(CTL) stop api

# ------------------------------------------------------------ alerts you can hear (issue 17)
.PHONY: alerts.receiver alerts.receiver.stop
alerts.receiver: venv ## start the alert receiver (Alertmanager's webhook, :9411 /alerts -> logs/alerts.jsonl, OSC)
	@$(CTL) start alert_receiver --port $(ALERTS_PORT) --host $(ALERTS_HOST) -- \
		$(PY) -u $(ROOT)/tools/alert_receiver.py --config $(CONFIG_ALERTS)

alerts.receiver.stop: venv ## stop the alert receiver
	@$(CTL) stop alert_receiver

health: venv ## check the exporters and the API once per line (ONCE=1: once, exit 1 if down)
	@$(PY) -u $(ROOT)/tools/healthcheck_v18.py $(if $(ONCE),--once,)

# ------------------------------------------------------------------------------- ops
ops.build: venv ## regenerate prometheus.yml and the PrometheusRule resources (HOSTS=file: many hosts)
	@$(PY) $(ROOT)/tools/ops_build.py $(if $(HOSTS),--hosts $(HOSTS) --prometheus-out $(or $(PROM_OUT),$(ROOT)/ops/prometheus/prometheus.yml))

ops.check: venv ## check every ops file with its real tool (promtool, amtool, docker-compose, k8s schemas)
	@bash $(ROOT)/scripts/ops.check.sh

alert.reload: ## ask Alertmanager to reload its config (ALERTMANAGER_URL)
	@curl -fsS -X POST $(ALERTMANAGER_URL)/-/reload && echo "[alert.reload] RESULT = RELOADED" || \
		{ echo "error: Alertmanager at $(ALERTMANAGER_URL) did not accept the reload" >&2; exit 1; }

prom.reload: ## ask Prometheus to reload its config (needs --web.enable-lifecycle; PROMETHEUS_URL)
	@curl -fsS -X POST $(PROMETHEUS_URL)/-/reload && echo "[prom.reload] RESULT = RELOADED" || \
		{ echo "error: Prometheus at $(PROMETHEUS_URL) did not accept the reload (403: started" \
			"without --web.enable-lifecycle; the compose stack: docker compose kill -s HUP" \
			"prometheus, or ops/compose/prometheus-lifecycle.yml)" >&2; exit 1; }
