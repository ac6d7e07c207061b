"""Lumen's core: everything the entry points do, importable and tested without a process.

The entry points (rmb/, exporters/, safety/, ure/, api/, tools/, bench/) only parse flags,
load a config and call into this package. docs/architecture.md maps each module to its job:
the shared mechanisms (vocab, timefmt, events, tail, consumer, stats, jsonl, checkpoint,
config, httpserve, proc, ctl) and the stages (emitter, exporters, safety/, merge, ure,
ingest, api/, tracka, harness/); cli, the console scripts of an installed Lumen.
"""

import sys
from importlib import resources, util
from pathlib import Path

# The Python modules of the dependencies pyproject.toml declares (module: distribution).
# Importing lumen checks them, so every entry point, console script and `python -m lumen.x`
# run with a Python that lacks them ends in one line and exit status 2 instead of a
# traceback deep inside (tests/test_bootstrap.py keeps this in step with pyproject.toml).
DEPENDENCIES = {
    "yaml": "pyyaml",
    "jsonschema": "jsonschema",
    "requests": "requests",
    "prometheus_client": "prometheus_client",
    "orjson": "orjson",
    "jsonschema_rs": "jsonschema-rs",
    "pythonosc": "python-osc",
    "mido": "mido",
    "numpy": "numpy",
    "msgspec": "msgspec",
    "supervisor": "supervisor",
    "psycopg": "psycopg",
}
HINT = "run make venv (or pip install .)"


def unusable(why):
    """This Python cannot run Lumen: one line on stderr, then exit status 2 (in an
    interactive session an ImportError instead, so the session goes on)."""
    msg = f"{why}: {HINT}"
    if hasattr(sys, "ps1"):
        raise ImportError(msg)
    print(f"error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def missing_message(names):
    """The line for the missing dependency modules `names`: the first three named (with
    their distribution when it is spelled otherwise), and this Python."""
    shown = [n if DEPENDENCIES.get(n, n) == n else f"{n} ({DEPENDENCIES[n]})" for n in names]
    more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
    return (
        f"{sys.executable or 'this Python'} lacks the Python module"
        f"{'s' if len(shown) > 1 else ''} {', '.join(shown[:3])}{more}, which Lumen needs"
    )


_missing = [m for m in DEPENDENCIES if util.find_spec(m) is None]
if _missing:
    unusable(missing_message(_missing))

# The source tree: only for what needs a checkout (the dev harnesses in lumen/harness run
# the Makefile and the scripts by path; ops/ and tests/fixtures/ are not installed).
ROOT = Path(__file__).resolve().parent.parent


def _data(package):
    """The folder of a data package, through importlib.resources: configs/ and schemas/ at
    the repository root are lumen.configs and lumen.schemas (pyproject.toml), so an editable
    install finds them in the checkout and a wheel in site-packages."""
    try:
        folder = resources.files(package)
    except ModuleNotFoundError:
        unusable(
            f"{package} not found: Lumen ({Path(__file__).parent}) is not installed in "
            f"{sys.executable or 'this Python'}, or was installed before its data became packages"
        )
    if not isinstance(folder, Path):  # a zip import, say: the code opens and globs files
        raise ImportError(f"{package}: Lumen's data must be files on disk, not {folder!r}")
    return folder


SCHEMAS = _data("lumen.schemas")  # the event schemas (schemas/)
CONFIGS = _data("lumen.configs")  # the default configs, with their schemas in schemas/
