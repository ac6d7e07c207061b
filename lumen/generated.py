"""Files generated from a source (make ops.build, make dashboards.v3.build): whether a
file is current, and the verdict line both print."""

import sys


def current(path, text):
    """The file at path exists and holds exactly text."""
    return path.exists() and path.read_text() == text


def verdict(tag, target, stale, check):
    """`[TARGET] RESULT = CURRENT|BUILT` and 0; with files out of date, a line naming them
    on stderr and 1."""
    if stale:
        print(f"[{tag}] out of date: {', '.join(stale)} (run make {target})", file=sys.stderr)
        return 1
    print(f"[{target}] RESULT = {'CURRENT' if check else 'BUILT'}")
    return 0
