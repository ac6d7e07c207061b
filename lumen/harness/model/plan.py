"""The model check's plans: seeded lists of steps, their text form, and the bad-line kinds.

A plan is a list of steps, each a list of words (`["append", "12", "+json,deep"]`); its
text form is the steps joined by "; " (what a failure prints and `--plan` reads back).
make_plan(seed, steps) draws one from random.Random(seed): the first K steps of a longer
plan are the plan of K steps, so a failure replays with fewer steps. The step vocabulary
is documented in lumen.harness.model (the package docstring) and checked here
(parse_plan raises ValueError on a step it does not know).

KINDS maps each bad-line kind to the reject reason every stage must give it;
KNOWN_ISSUES and KNOWN_SEQUENCES list what the stack still gets wrong (plans steer clear
of it unless `--known` is given).
"""

import random

PROCS = ("exporter", "merge", "ingest", "safety")

# Bad lines: kind -> the reason every stage must give it (lumen/events.py's REASONS).
KINDS = {
    "json": "json",  # not JSON
    "utf8": "utf8",  # invalid UTF-8 inside a JSON string (of an unknown key)
    "utf8_field": "utf8",  # invalid UTF-8 inside a string of the schema (entity_id)
    "deep": "not_object",  # 1000-deep nesting (orjson parses up to 1024), a list
    "deep_obj": "schema",  # 1000-deep nesting inside an object: JSON, lacks the keys
    "too_deep": "json",  # 2000-deep nesting inside an object: past the parser's limit
    "not_object": "not_object",
    "schema": "schema",  # an object lacking required keys
    "oversize": "oversize",  # > 1 MiB
    "ts_future": "ts_future",  # valid, stamped 2099
    "ts_space": "schema",  # `2025-11-01 00:00:00Z`: not RFC 3339
}
# Kinds whose lines the stack classifies differently from KINDS, left out of generated plans
# unless --known is given: none now (utf8_field, deep_obj and too_deep were, until the
# typed path handed every msgspec refusal to the slow path and Validator.error survived
# deep nesting; tests/test_issue12_lines.py pins those verdicts).
KNOWN_ISSUES = {}
# Sequences the stack currently gets wrong (lumen/tail.py), avoided unless --known: a live
# file whose first line the readers may not have seen whole (`fresh`: empty after a
# copytruncate or a rotation with `create`, or begun with a torn line) is copytruncated only
# once every process is up and has read it, and renamed only once every running reader has;
# a live file holding only a torn line is not copytruncated. (A reader down across a
# copytruncate and a rename, resuming by inode in the rewritten file, was one too until the
# tailer compared first lines; the plans exercise it again.)
KNOWN_SEQUENCES = {}  # the two found so far (copytruncate then rename before a poll; a live
# file copytruncated before its first line was ever whole) were fixed in lumen/tail.py and
# are replayed in tests/test_model.py's FIXED plans.
FRAGMENT_REASON = "json"


def parse_plan(text):
    steps = []
    for part in text.split(";"):
        words = part.split()
        if words:
            steps.append(words)
    for w in steps:
        _validate_step(w)
    return steps


def _validate_step(w):
    op, args = w[0], w[1:]
    ok = {
        "append": lambda: (
            len(args) in (1, 2)
            and args[0].isdigit()
            and (
                len(args) == 1
                or (args[1].startswith("+") and all(k in KINDS for k in args[1][1:].split(",")))
            )
        ),
        "reject": lambda: len(args) == 1 and args[0] in KINDS,
        "fragment": lambda: not args,
        "rotate": lambda: args in (["create"], ["nocreate"]),
        "copytruncate": lambda: not args,
        "compress": lambda: len(args) == 1 and args[0].isdigit() and int(args[0]) >= 1,
        "logrotate": lambda: not args,
        "kill": lambda: (
            len(args) in (2, 3)
            and args[0] in PROCS
            and args[1].isdigit()
            and (len(args) == 2 or args[2] == "+restart")
        ),
        "restart": lambda: len(args) == 1 and args[0] in PROCS,
        "merge.once": lambda: not args,
        "merge.follow": lambda: not args,
        "ingest.once": lambda: not args,
        "up": lambda: not args,
        "check": lambda: not args,
        "break": lambda: len(args) == 1 and args[0] in ("exporter", "safety", "merge"),
    }.get(op)
    if ok is None or not ok():
        raise ValueError(f"bad plan step: {' '.join(w)!r}")


def make_plan(seed, steps, long=False, known=False):
    """The seeded plan: a list of steps (word lists). The first K steps of a longer plan
    are the plan of K steps."""
    rng = random.Random(seed)
    kinds = sorted(k for k in KINDS if known or k not in KNOWN_ISSUES)
    ops = [
        ("append", 26),
        ("reject", 12),
        ("fragment", 5),
        ("rotate", 7),
        ("copytruncate", 5),
        ("compress", 4),
        ("logrotate", 3),
        ("kill", 12),
        ("restart", 3),
        ("merge.once", 3),
        ("merge.follow", 3),
        ("ingest.once", 3),
        ("up", 2),
        ("check", 12 if not long else 6),
    ]
    names, weights = zip(*ops)
    plan = []
    for _ in range(steps):
        op = rng.choices(names, weights)[0]
        if op == "append":
            n = rng.randint(10, 50) if rng.random() < 0.8 else rng.randint(1, 3)
            w = ["append", str(n)]
            if rng.random() < 0.3:
                w.append("+" + ",".join(rng.choice(kinds) for _ in range(rng.randint(1, 3))))
        elif op == "reject":
            w = ["reject", rng.choice(kinds)]
        elif op == "rotate":
            w = ["rotate", rng.choice(("create", "nocreate"))]
        elif op == "compress":
            w = ["compress", str(rng.randint(1, 3))]
        elif op == "kill":
            w = ["kill", rng.choice(PROCS), str(rng.choice((0, 0, 10, 30, 100)))]
            if rng.random() < 0.5:
                w.append("+restart")
        elif op == "restart":
            w = ["restart", rng.choice(PROCS)]
        else:
            w = [op]
        plan.append(w)
    return plan


def plan_text(plan):
    return "; ".join(" ".join(w) for w in plan)


def parse_seeds(text):
    out = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out += range(int(a), int(b) + 1)
        elif part:
            out.append(int(part))
    return out
