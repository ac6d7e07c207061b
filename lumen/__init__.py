"""Lumen's core: everything the entry points do, importable and tested without a process.

The entry points (rmb/, exporters/, safety/, ure/, api/, tools/, bench/) only parse flags,
load a config and call into this package. docs/architecture.md maps each module to its job:
the shared mechanisms (vocab, timefmt, events, tail, consumer, stats, jsonl, checkpoint,
config, httpserve, proc, ctl) and the stages (emitter, exporters, safety/, merge, ure,
ingest, api/, tracka, harness/).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
CONFIGS = ROOT / "configs"
