"""Ingest (blueprint section 40): store rmb_events.jsonl and resonance_events_v2.jsonl (and
safety_music_events.jsonl, for the live page, and alerts.jsonl, Alertmanager's alerts as
the webhook receiver wrote them) in SQLite, exactly once; run by
tools/storage/ingest_tail_v18.py (make db.ingest).

Both logs are read through the shared consumer (consumers `ingest_rmb`, `ingest_ure`)
from their checkpoints, so events written before the ingester started are stored (the
blueprint seeked to the end and never stored them). Rows are inserted in batched
transactions (`ingest.batch_lines`); a row's identity is its source (the fingerprint of
its own log file, offset) under a UNIQUE constraint, and each consumer's checkpoint is a
row of the `offsets` table written in the same transaction as the rows, so a crash or a
power loss at any point neither loses nor duplicates a row. A stored identity with a
different payload is counted and quarantined (`conflict`). Bad lines are quarantined and
counted. A full disk or a locked database is retried with the batch kept. On a terminal,
a backfill shows rows/s and an ETA.
"""

import sys
import time

from lumen import lock, storage
from lumen.consumer import Consumer, Pos
from lumen.proc import Lifecycle, first_line, warn_retry

CONSUMERS = (
    ("rmb", "ingest_rmb", "rmb_event_v1.json", "rmb_events", storage.rmb_row),
    ("ure", "ingest_ure", "resonance_event_v2.json", "resonance_events_v2", storage.ure_row),
    (
        "safety",
        "ingest_safety",
        "safety_music_event_v1.json",
        "safety_music_events",
        storage.safety_row,
    ),
    ("alerts", "ingest_alerts", "alert_event_v1.json", "alerts", storage.alert_row),
)


class _NotCommitted(Exception):
    """The consumer could not write its rejects: undo the transaction, retry later."""


class Ingester:
    def __init__(self, cfg, offsets_dir=storage.OFFSETS_DIR, rejects_dir="logs/rejects"):
        self.store = storage.open_store(cfg, offsets_dir)
        self.where = str(self.store)
        # A checkpoint file from before the offsets table is the SQLite store's past; a
        # PostgreSQL store starts from its own offsets (nothing of it is in that file).
        legacy = not storage.is_postgres(storage.db_url(cfg))
        self.batch = cfg["ingest"]["batch_lines"]
        logs = {
            "rmb": cfg["ingest"]["rmb_log"],
            "ure": cfg["ingest"]["v2_log"],
            "safety": cfg["ingest"].get("safety_log", "logs/safety_music_events.jsonl"),
            "alerts": cfg["ingest"].get("alerts_log", "logs/alerts.jsonl"),
        }
        self.parts = []
        try:
            for table, name, schema, stream, to_row in CONSUMERS:
                c = Consumer(
                    logs[table],
                    name,
                    schema,
                    stream,
                    offsets_dir,
                    rejects_dir,
                    typed=table == "rmb",  # one-pass decode and validation (rmb_row)
                    store=self.store.offsets(
                        name, f"{offsets_dir}/{name}.json" if legacy else None
                    ),
                )
                self.parts.append((table, c, to_row, []))
        except BaseException:
            self.close()
            raise
        self.rows = {"rmb": 0, "ure": 0, "safety": 0, "alerts": 0}
        self.inserted = 0
        self.conflicts = 0
        self.unstorable = 0
        self.write_errors = 0

    def step(self):
        """One transaction per table with what is new; returns lines read. Rows that could
        not be stored (disk full, database locked too long) stay pending and go first."""
        total = 0
        for table, consumer, to_row, rows in self.parts:
            read = 0
            if not rows:  # nothing pending: read a batch
                while len(rows) < self.batch:
                    n = consumer.poll(self._collector(table, consumer, to_row, rows))
                    if not n:
                        break
                    read += n
                if not read:
                    continue
            total += read
            if self._store(table, consumer, rows):
                self.rows[table] += len(rows)
                rows.clear()
        return total

    def _collector(self, table, consumer, to_row, rows):
        """on_event for a poll: the event's row, or a quarantined reject when the store
        cannot hold it (PostgreSQL text has no NUL character)."""
        append = rows.append
        if not self.store.FILTERS:  # SQLite holds every row

            def add(e, pos):
                append(to_row(e, pos))

            return add
        unstorable = self.store.unstorable

        def check(e, pos):
            row = to_row(e, pos)
            why = unstorable(table, row)
            if why is None:
                append(row)
            else:
                self.unstorable += 1
                consumer.reject("unstorable", f"{table}: {why}", pos, repr(row).encode())

        return check

    def _store(self, table, consumer, rows):
        """The rows and the consumer's position past them, in one transaction."""
        try:
            with self.store.transaction():
                added, differ = self.store.insert(table, rows) if rows else (0, ())
                if differ:
                    self._conflicts(table, consumer, rows, differ)
                self.store.note_newest(table, rows)  # a conflict is not newest
                if not consumer.commit():
                    raise _NotCommitted("rejects not written")
            self.inserted += added  # counted once the transaction has committed
            return True
        except (*self.store.RETRY, _NotCommitted) as e:  # full disk, busy or gone database
            self.write_errors += 1
            warn_retry("[ingest]", self.write_errors, f"{table}: {first_line(e)}")
            return False

    def _conflicts(self, table, consumer, rows, differ):
        """Stored rows with these rows' identities but another payload: each a conflict,
        counted and quarantined, never silently dropped (the same row again is fine). The
        quarantined rows leave the pending batch at once: if this transaction fails, the
        retry must not quarantine them a second time (their rejects are the consumer's)."""
        cols = storage.COLUMNS[table]
        fp, off, t = cols.index("src_fp"), cols.index("src_offset"), cols.index("t")
        keep = []
        for row in rows:
            if (row[fp], row[off]) in differ:
                self.conflicts += 1
                consumer.reject(
                    "conflict",
                    f"{table}: a different row is stored at ({row[fp]}, {row[off]})",
                    Pos(row[fp], row[off], row[t]),
                    repr(row).encode(),
                )
            else:
                keep.append(row)
        self.rows[table] += len(rows) - len(keep)  # read, and dealt with
        rows[:] = keep

    def behind(self):
        return sum(c.tailer.bytes_behind() for _, c, _, _ in self.parts)

    def close(self):
        for _, c, _, _ in self.parts:
            c.close()
        self.store.close()


def run(cfg, name="ingest", once=False):
    """Store new lines until SIGTERM (once: until none is left, or hand over to a running
    ingester); prints what it stored. Returns the exit code."""
    unavailable = storage.unavailable_errors(cfg)
    failures = 0
    while True:
        try:
            ing = Ingester(cfg)
            break
        except lock.Busy as e:
            if not once:
                raise
            # Hand over: the running ingester stores new lines itself, exactly once.
            print(f"[ingest] nothing to do here: {e}; it stores new lines as they arrive")
            return 0
        except unavailable as e:
            # A store that is not there yet (a server starting, a locked file): wait for it,
            # rather than exit and have the supervisor give up after a few quick restarts.
            failures += 1
            if once and failures >= 3:
                print(
                    f"error: {storage.name_of(storage.db_url(cfg))}: {first_line(e)}",
                    file=sys.stderr,
                )
                return 1
            warn_retry("[ingest]", failures, f"store unavailable: {first_line(e)}")
            time.sleep(min(5.0, 0.5 * failures))
    tty = sys.stderr.isatty()
    t0 = last = time.monotonic()
    with Lifecycle(name) as life:
        life.ready()
        print(
            f"[ingest] {cfg['ingest']['rmb_log']} + {cfg['ingest']['v2_log']} -> {ing.where}"
            f" (host {ing.store.host})",
            flush=True,
        )
        try:
            while not life.stop.is_set():
                n = ing.step()
                now = time.monotonic()
                if n and tty and now - last >= 1.0:
                    last = now
                    done = sum(ing.rows.values())
                    rate = done / (now - t0)
                    behind = ing.behind()
                    per_row = sum(c.bytes_read for _, c, _, _ in ing.parts) / max(done, 1)
                    eta = behind / per_row / rate if rate > 0 else 0
                    print(
                        f"\r[ingest] {done} rows, {rate:,.0f} rows/s, ETA {eta:,.0f}s   ",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
                if not n:
                    if once:
                        break
                    life.stop.wait(0.2)
        finally:
            ing.close()
    if tty:
        print(file=sys.stderr)
    dt = time.monotonic() - t0
    print(
        f"[ingest] stored {ing.inserted} new rows (rmb {ing.rows['rmb']}, ure {ing.rows['ure']} "
        f"read) in {dt:.1f}s",
        flush=True,
    )
    return 0
