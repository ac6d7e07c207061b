"""Lumen's shared core: what every process needs, written once.

- jsonl: locked, batched append of whole lines
- tail: the checkpointed tailer (rotation, copytruncate, partial lines)
- checkpoint: atomic state files
- events: parse + validate one line, with a reason when it is bad
- rejects: the quarantine for bad lines
- config: YAML configs validated against JSON Schema, env and flag overrides
- proc: PID files, signals, process logs; ctl: start/stop/status for make
- windows: time windows on event timestamps
- httpserve: the stdlib HTTP server every exporter and the API sit on
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
CONFIGS = ROOT / "configs"
