"""Render ops/grafana/dashboards.src.yaml into Grafana dashboard JSON (make
dashboards.v3.build, tools/dashboards_v3_build.py).

Each dashboard gets a stable uid, schemaVersion 39, a Prometheus data-source variable
(`datasource`) and a Loki one (`loki`, for the optional log panel), and panels laid out on
the 24-column grid (gridPos). `--check` renders in memory and exits 1 if a committed file
differs from its source (so the JSON cannot drift from the source); no Grafana is needed.
"""

import json
from pathlib import Path

import yaml

from lumen import ROOT, generated

SRC = ROOT / "ops/grafana/dashboards.src.yaml"
OUT = ROOT / "ops/grafana/dashboards"
SCHEMA_VERSION = 39


def _variables():
    return {
        "list": [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {},
                "hide": 0,
                "refresh": 1,
            },
            {
                "name": "loki",
                "label": "Loki (optional)",
                "type": "datasource",
                "query": "loki",
                "current": {},
                "hide": 0,
                "refresh": 1,
            },
        ]
    }


def _panel(i, spec, x, y, w, h):
    ds_var = "${loki}" if spec.get("datasource") == "loki" else "${datasource}"
    ds_type = "loki" if spec.get("datasource") == "loki" else "prometheus"
    exprs = spec["expr"] if isinstance(spec["expr"], list) else [spec["expr"]]
    panel = {
        "id": i + 1,
        "type": spec["type"],
        "title": spec["title"],
        "datasource": {"type": ds_type, "uid": ds_var},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            {"refId": chr(ord("A") + k), "expr": e, "datasource": {"type": ds_type, "uid": ds_var}}
            for k, e in enumerate(exprs)
        ],
    }
    if "description" in spec:
        panel["description"] = spec["description"]
    if spec["type"] == "logs":
        panel["options"] = {"showTime": True, "wrapLogMessage": True}
        return panel
    defaults = {}
    if "thresholds" in spec:
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": c, "value": v} for c, v in spec["thresholds"]],
        }
    for k in ("min", "max"):
        if k in spec:
            defaults[k] = spec[k]
    if spec["type"] == "timeseries" and "threshold_style" in spec:
        defaults["custom"] = {"thresholdsStyle": {"mode": spec["threshold_style"]}}
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    if spec["type"] == "stat":
        panel["options"] = {
            "colorMode": "background",
            "graphMode": "area",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        }
    return panel


def render(d):
    panels, x, y, row_h = [], 0, 0, 0
    for i, spec in enumerate(d["panels"]):
        w = spec.get("width", 8 if spec["type"] == "stat" else 12)
        h = 8 if spec["type"] != "stat" else 5
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
        panels.append(_panel(i, spec, x, y, w, h))
        x += w
        row_h = max(row_h, h)
    return {
        "uid": d["uid"],
        "title": d["title"],
        "tags": d.get("tags", []),
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "time": {"from": d.get("time_from", "now-6h"), "to": "now"},
        "refresh": "10s",
        "timezone": "browser",
        "templating": _variables(),
        "annotations": {"list": []},
        "panels": panels,
    }


def build(src=SRC):
    spec = yaml.safe_load(Path(src).read_text())
    return {d["file"]: json.dumps(render(d), indent=2) + "\n" for d in spec["dashboards"]}


def stale(out=OUT):
    """The dashboards whose JSON under out is not what the source renders."""
    return [name for name, text in build().items() if not generated.current(out / name, text)]


def write(out=OUT, check=False):
    """Write each dashboard that changed and name them all (check: only compare); returns
    the exit code."""
    if check:
        return generated.verdict("dashboards", "dashboards.v3.build", stale(out), check)
    for name, text in build().items():
        p = out / name
        out.mkdir(parents=True, exist_ok=True)
        if not generated.current(p, text):
            p.write_text(text)
        print(
            f"[dashboards] {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}: "
            f"{len(json.loads(text)['panels'])} panels"
        )
    return generated.verdict("dashboards", "dashboards.v3.build", [], check)
