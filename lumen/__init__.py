"""Lumen's core: everything the entry points do, importable and tested without a process.

The entry points (rmb/, exporters/, safety/, ure/, api/, tools/, bench/) only parse flags,
load a config and call into this package. docs/architecture.md maps each module to its job:
the shared mechanisms (vocab, timefmt, events, tail, consumer, stats, jsonl, checkpoint,
config, httpserve, proc, ctl) and the stages (emitter, exporters, safety/, merge, ure,
ingest, api/, tracka, harness/); cli, the console scripts of an installed Lumen.
"""

from importlib import resources
from pathlib import Path

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
        raise ImportError(
            f"{package} not found: Lumen is not installed, or was installed before its data "
            "became packages; install it (make venv, or pip install -e .)"
        ) from None
    if not isinstance(folder, Path):  # a zip import, say: the code opens and globs files
        raise ImportError(f"{package}: Lumen's data must be files on disk, not {folder!r}")
    return folder


SCHEMAS = _data("lumen.schemas")  # the event schemas (schemas/)
CONFIGS = _data("lumen.configs")  # the default configs, with their schemas in schemas/
