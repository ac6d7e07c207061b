#!/usr/bin/env python3
"""dashboards.v3.build: render ops/grafana/dashboards.src.yaml into Grafana dashboard JSON.

Each dashboard gets a stable uid, schemaVersion 39, a Prometheus data-source variable
(`datasource`) and a Loki one (`loki`, for the optional log panel), and panels laid out on
the 24-column grid (gridPos). `--check` renders in memory and exits 1 if a committed file
differs from its source (so the JSON cannot drift from the source); no Grafana is needed.
"""
import argparse
import json
import sys
from pathlib import Path

import yaml

from lumen import ROOT

SRC = ROOT / "ops/grafana/dashboards.src.yaml"
OUT = ROOT / "ops/grafana/dashboards"
SCHEMA_VERSION = 39


def _variables():
    return {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1},
        {"name": "loki", "label": "Loki (optional)", "type": "datasource", "query": "loki",
         "current": {}, "hide": 0, "refresh": 1},
    ]}


def _panel(i, spec, x, y, w, h):
    ds_var = "${loki}" if spec.get("datasource") == "loki" else "${datasource}"
    ds_type = "loki" if spec.get("datasource") == "loki" else "prometheus"
    exprs = spec["expr"] if isinstance(spec["expr"], list) else [spec["expr"]]
    panel = {
        "id": i + 1, "type": spec["type"], "title": spec["title"],
        "datasource": {"type": ds_type, "uid": ds_var},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [{"refId": chr(ord("A") + k), "expr": e,
                     "datasource": {"type": ds_type, "uid": ds_var}}
                    for k, e in enumerate(exprs)],
    }
    if "description" in spec:
        panel["description"] = spec["description"]
    if spec["type"] == "logs":
        panel["options"] = {"showTime": True, "wrapLogMessage": True}
        return panel
    defaults = {}
    if "thresholds" in spec:
        defaults["thresholds"] = {"mode": "absolute", "steps": [
            {"color": c, "value": v} for c, v in spec["thresholds"]]}
    for k in ("min", "max"):
        if k in spec:
            defaults[k] = spec[k]
    if spec["type"] == "timeseries" and "threshold_style" in spec:
        defaults["custom"] = {"thresholdsStyle": {"mode": spec["threshold_style"]}}
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    if spec["type"] == "stat":
        panel["options"] = {"colorMode": "background", "graphMode": "area",
                            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                              "values": False}}
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
        "uid": d["uid"], "title": d["title"], "tags": d.get("tags", []),
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": True,
        "time": {"from": d.get("time_from", "now-6h"), "to": "now"},
        "refresh": "10s", "timezone": "browser",
        "templating": _variables(), "annotations": {"list": []},
        "panels": panels,
    }


def build(src=SRC):
    spec = yaml.safe_load(Path(src).read_text())
    return {d["file"]: json.dumps(render(d), indent=2) + "\n" for d in spec["dashboards"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check the committed JSON is current")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    out = Path(a.out)
    stale = []
    for name, text in build().items():
        p = out / name
        if a.check:
            if not p.exists() or p.read_text() != text:
                stale.append(name)
            continue
        out.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
        print(f"[dashboards] {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}: "
              f"{len(json.loads(text)['panels'])} panels")
    if stale:
        print(f"[dashboards] out of date: {', '.join(stale)} (run make dashboards.v3.build)",
              file=sys.stderr)
        return 1
    print(f"[dashboards.v3.build] RESULT = {'CURRENT' if a.check else 'BUILT'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
