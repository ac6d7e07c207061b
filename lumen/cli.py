"""The console scripts of an installed Lumen (pyproject.toml [project.scripts]).

Each runs one entry point's main() through lumen.proc.cli_main, exactly as running the
entry's file does (`python rmb/rmb_emitter.py ...`, the Makefile's way), so both take the
same flags and defaults: the default configs are the shipped ones (lumen.CONFIGS), state
(logs/, data/, run/) goes to the working directory. tools/ is installed as lumen.tools.
"""

import importlib

from lumen.proc import cli_main


def run(module):
    """Exit code of `module`'s main(), its flags taken from sys.argv."""
    return cli_main(importlib.import_module(module).main)


def rmb_emitter():
    return run("rmb.rmb_emitter")


def rmb_bridge():
    return run("rmb.bridge_v17")


def rmb_exporter():
    return run("exporters.rmb_exporter_v17")


def ure_exporter():
    return run("exporters.ure_exporter_v18")


def safety_music():
    return run("safety.safety_music_loop")


def safety_render():
    return run("safety.safety_music_render")


def safety_levels():
    return run("safety.safety_levels")


def merge():
    return run("lumen.tools.merge_rmb_safety_v2")


def ure_loop():
    return run("ure.ure_loop_v18")


def ure_verify():
    return run("lumen.tools.ure_verify_v18")


def db_init():
    return run("lumen.tools.storage.sqlite_init_v17_18")


def ingest():
    return run("lumen.tools.storage.ingest_tail_v18")


def api():
    return run("api.read_only")


def health():
    return run("lumen.tools.healthcheck_v18")


def tracka():
    return run("lumen.tools.tracka_v17")


def kpi_reporter():
    return run("lumen.tools.kpi_reporter_v17")


def evidence_map():
    return run("lumen.tools.evidence_mapper_v17")


def tune_v17():
    return run("lumen.tools.tuner_v17")


def tune_v18():
    return run("lumen.tools.tuner_v18")


def alert_receiver():
    return run("lumen.tools.alert_receiver")
