"""Model-based check: a seeded random plan of appends, rotations, kills and operator
commands against the real processes, checked against a plain in-memory model.

The system under test, started in a scratch directory (cwd) on an ephemeral port:
rmb_exporter (exporters/rmb_exporter_v17.py), the merge follower
(tools/merge_rmb_safety_v2.py --follow), the ingest follower
(tools/storage/ingest_tail_v18.py) and the Safety Music loop. Nothing else writes
logs/rmb_events.jsonl: this driver appends to it, one action at a time, so the model knows
exactly what is on disk. Actions (drawn from random.Random(seed)):

  append N [+k1,k2]  N valid v1 events (unique entity_id and trace.iter, stamped now) in
                     one locked write, bad lines of kinds k1, k2 ... interleaved
  reject K           one bad line of kind K (see KINDS: every reason a line can have)
  fragment           a torn line without its newline; the next append ends it (one `json`
                     reject), and a rotation makes it the last line of the rotated file
  rotate create|nocreate   rename rotation of the RMB log: .i -> .i+1 (.gz too), live -> .1
  copytruncate       copy the live RMB log to .1 (after the shift), then truncate it
  compress I         gzip <log>.I -> <log>.I.gz, then delete <log>.I (as gzip does)
  logrotate          real logrotate (the project's stanzas: rename, compress, delaycompress)
                     on the Safety Music and v2 logs
  kill P D [+restart]  SIGKILL process P (exporter|merge|ingest|safety) D ms after the last
                     action, optionally restarting it at once; it stays down otherwise
  restart P          start P if it is down
  merge.once         `merge_rmb_safety_v2.py` one-shot: hands over to a running follower
                     (exit 0, "nothing to do here"), else merges itself (exit 0)
  merge.follow       a second follower: exit 2 naming the running one's PID (if none runs,
                     it becomes the follower)
  ingest.once        `ingest_tail_v18.py --once`: hands over (exit 0) or backfills (exit 0)
  up                 `make up` again: start every process; running ones must refuse
                     (exit 2, naming the holder), stopped ones start
  check              wait (bounded) until every stage agrees with the model
  break P            (never generated) move P's checkpoint back one line while it is down:
                     a broken reader, which the model must catch (tests/test_model.py)

A rotation that would push a file past KEEP rotated files deletes it, as logrotate's
`rotate KEEP` does; it checks first (every process up and caught up), so nothing unread is
deleted. After the plan: check, SIGTERM everything (exit 0 each), check the checkpoints,
start everything again and check once more (a restart must not count anything twice).

What a check compares, per stage, with the model (valid events by identity, rejects by
reason; a pending fragment is not counted until it has ended):
  exporter   /metrics rmb_events_total, rmb_rejects_total{reason}, rmb_log_gap_bytes_total,
             and the same in its checkpoint (logs/.offsets/rmb_exporter.json)
  safety     logs/.offsets/safety_music.json state.monitor: valid, rejects, gap_bytes
  merge      the v2 log (all its files): each valid event exactly once (entity_id), no
             source (stream, fp, offset) twice; merge_rmb's monitor: valid, rejects
  ingest     data/lumen.db (read-only): table rmb one row per valid event, table ure one
             row per merged valid event, ingest_rmb's monitor: valid, rejects, gap_bytes
  quarantine logs/rejects/rmb_events.jsonl: per consumer, distinct (source, offset)
             records by reason == the model's rejects
Any mismatch that outlives the bounded wait fails the run with the seed, the plan, the
step and every stage's numbers; `--plan` replays a plan (or a shortened one) exactly, and
`--shrink` looks for a shorter plan that still fails.

What the stack still gets wrong is listed in KNOWN_SEQUENCES (and KNOWN_ISSUES for bad-line
kinds): plans steer clear of it unless `--known` is given.

    python tools/model_check.py --seed 7 --steps 30
    python tools/model_check.py --long --seeds 1-10            # make soak
    python tools/model_check.py --plan "append 5; fragment; copytruncate; check"
"""

# Where it is: plan (steps, seeds, KINDS), lines (events and bad lines, reading logs back),
# procs (the processes under test), actions (one op_ method a step), oracle (the checks),
# runner (Run, run, shrink, the loop over seeds). tools/model_check.py is the entry.
from lumen.harness.model.lines import bad_line, valid_event
from lumen.harness.model.plan import (
    KINDS,
    KNOWN_ISSUES,
    KNOWN_SEQUENCES,
    make_plan,
    parse_plan,
    parse_seeds,
    plan_text,
)
from lumen.harness.model.runner import Run, run, run_seeds, shrink

__all__ = [
    "KINDS",
    "KNOWN_ISSUES",
    "KNOWN_SEQUENCES",
    "Run",
    "bad_line",
    "make_plan",
    "parse_plan",
    "parse_seeds",
    "plan_text",
    "run",
    "run_seeds",
    "shrink",
    "valid_event",
]
