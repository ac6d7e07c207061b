"""An installed Lumen runs anywhere (issue "Runs anywhere", point 1): the wheel, installed
(not editable) into a fresh venv, runs its console scripts from an empty directory with no
source tree in sight, on the configs, schemas and live page it ships.

How: the packaged folders (pyproject.toml's packages and package-dir) are copied to a temp
directory, so the build neither writes build/ into the checkout nor picks up a stale
build/lib, and built with `pip wheel --no-deps --no-build-isolation --no-index` on this
venv's setuptools (offline). A venv is created without --system-site-packages (and without
pip: this venv's pip installs into it with --python); the wheel's dependencies come from
pip's configured indexes (this reaches the package index), pinned to the versions in this
venv. Each process runs under a deadline and is stopped by its PID. Slow: ~30-60 s, most
of it installing the dependencies; the times are printed (pytest -s).
"""

import importlib.metadata
import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, unlabelled_samples, wait_until

pytestmark = pytest.mark.timeout(900)
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS = sorted(PROJECT["project"]["scripts"])
SETUPTOOLS_MIN = (70, 1)  # builds wheels without the `wheel` package (pyproject.toml)


def source_dirs():
    """The top-level folders the wheel is built from: each package's own folder."""
    st = PROJECT["tool"]["setuptools"]
    mapped = st.get("package-dir", {})
    return sorted({mapped[p] if p in mapped else p.split(".")[0] for p in st["packages"]})


def timed(what, times, cmd, timeout):
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    times[what] = time.monotonic() - t0
    assert r.returncode == 0, f"{what} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """The temp venv with the built wheel installed; returns its folder."""
    try:
        have = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        have = "none"
    if have == "none" or tuple(int(x) for x in re.findall(r"\d+", have)[:2]) < SETUPTOOLS_MIN:
        pytest.fail(
            f"building the wheel offline needs setuptools >= 70.1 in {sys.prefix} (found "
            f"{have}): run `make venv` (the test extra requires it)"
        )
    base = tmp_path_factory.mktemp("wheel")
    src, dist, env_dir = base / "src", base / "dist", base / "venv"
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    for d in source_dirs():
        shutil.copytree(ROOT / d, src / d, ignore=shutil.ignore_patterns("__pycache__"))
    times = {}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    timed(
        "wheel build",
        times,
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src],
        300,
    )
    wheels = list(dist.glob("lumen-*.whl"))
    assert len(wheels) == 1, wheels
    timed("venv", times, [sys.executable, "-m", "venv", "--without-pip", env_dir], 120)
    pins = base / "constraints.txt"
    pins.write_text(
        "".join(
            f"{d.metadata['Name']}=={d.version}\n"
            for d in importlib.metadata.distributions()
            if d.metadata["Name"].lower() != "lumen"
        )
    )
    timed(
        "install",
        times,
        [*pip, "--python", env_dir / "bin/python", "install", "-c", pins, wheels[0]],
        600,
    )
    print(
        f"\n[wheel] {wheels[0].name} {wheels[0].stat().st_size // 1024} KiB; "
        + ", ".join(f"{k} {v:.1f}s" for k, v in times.items())
    )
    return env_dir


@pytest.fixture
def run_in(venv, tmp_path):
    """Run an installed console script in an empty directory, with only the venv on PATH
    and nothing else from this environment (no PYTHONPATH, no config overrides)."""
    cwd = tmp_path / "empty"
    cwd.mkdir()
    env = {
        "PATH": f"{venv}/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    started = []

    def run(*cmd, timeout=60):
        r = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def serve(*cmd, banner, timeout=30):
        """Start a server; its port, read from the line it prints once it listens."""
        p = subprocess.Popen(
            [str(c) for c in cmd],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(p)
        found = queue.Queue()

        def read():  # keeps draining stdout after the banner
            for line in p.stdout:
                if m := re.search(banner, line):
                    found.put(int(m.group(1)))
            found.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            port = found.get(timeout=timeout)
        except queue.Empty:
            port = None
        assert port, f"{cmd}: no {banner!r} within {timeout}s"
        return p, port

    run.serve, run.cwd, run.started = serve, cwd, started
    yield run
    for p in started:  # by PID: SIGTERM, then SIGKILL
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


def stop(p):
    """SIGTERM by PID: a clean stop exits 0."""
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=20)
    err = p.stderr.read()
    assert rc == 0, f"exit {rc}: {err}"


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read()


def test_lumen_and_its_data_come_from_the_venv(venv, run_in):
    out = run_in(
        "python",
        "-c",
        "import json, sys, lumen; print(json.dumps([lumen.__file__, str(lumen.CONFIGS), "
        "str(lumen.SCHEMAS), sys.path]))",
    )
    where, configs, schemas, path = json.loads(out)
    site = next(venv.glob("lib/python3*/site-packages"))
    assert where == str(site / "lumen" / "__init__.py")
    assert configs == str(site / "lumen" / "configs")
    assert schemas == str(site / "lumen" / "schemas")
    assert not [p for p in path if p and Path(p).resolve().is_relative_to(ROOT)], path
    for f in ("rmb_v17.yaml", "api_v18.yaml", "schemas/rmb_v17.schema.json"):
        assert (site / "lumen/configs" / f).is_file(), f
    # The paths configs name relative to the project (the sound map, the SLO policy) are the
    # shipped files when the working directory has none.
    run_in(
        "python",
        "-c",
        "import lumen; from lumen import config, tracka; from lumen.safety import sound, loop\n"
        "sound.config_map(loop.load_config(lumen.CONFIGS / 'safety_music_v17.yaml'))\n"
        "assert tracka.load_policies(config.load(lumen.CONFIGS / 'trackA_v17.yaml'))",
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_starts(venv, run_in, script):
    assert "usage:" in run_in(script, "--help")


def test_emitter_and_exporter_run_on_the_shipped_configs(run_in):
    out = run_in("lumen-rmb-emitter", "--count", "5")  # no flags: the shipped config
    assert "emitted 5 events" in out, out
    lines = (run_in.cwd / "logs/rmb_events.jsonl").read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(ln)["ts"] for ln in lines)
    exporter = ("lumen-rmb-exporter", "--host", "127.0.0.1", "--port", "0")
    p, port = run_in.serve(*exporter, banner=r"RMB metrics on :(\d+)")
    wait_until(
        lambda: unlabelled_samples(get(port, "/metrics")[2].decode()).get("rmb_events_total") == 5,
        timeout=20,
        what="rmb_events_total 5",
    )
    stop(p)


def test_api_serves_an_ingested_db(run_in):
    run_in("lumen-rmb-emitter", "--count", "5")
    assert "5 rmb" in run_in("lumen-merge")
    assert "init ok" in run_in("lumen-db-init")
    run_in("lumen-ingest", "--once")
    p, port = run_in.serve("lumen-api", "--port", "0", banner=r"\[api\] http://[^:]+:(\d+)")
    status, ctype, body = get(port, "/api/rmb:last")
    row = json.loads(body)
    assert status == 200 and {"ts", "residual", "phase", "risk"} <= set(row), row
    status, ctype, body = get(port, "/")  # the live page: package data of lumen.api
    assert status == 200 and ctype.startswith("text/html") and b"<html" in body.lower()
    assert json.loads(get(port, "/api/slo")[2])  # the shipped SLO policy
    # The page's sound: its script and the shipped sound map (api.sound_map, configs/...).
    assert get(port, "/static/sound.js")[0] == 200
    shipped = json.loads((ROOT / "configs/midi_map_v18.json").read_text())["levels"]
    served = json.loads(get(port, "/api/sound")[2])["levels"]
    assert {k: v["notes"] for k, v in served.items()} == {k: v["notes"] for k, v in shipped.items()}
    stop(p)


def test_dockerfile_builds_the_same_wheel_and_runs_a_console_script():
    """The image is built as this test builds (no Docker needed to check that): every
    packaged folder copied, the wheel installed, a console script started."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\S+) \1$", text, re.M))
    assert set(source_dirs()) <= copied, set(source_dirs()) - copied
    assert re.search(r"^RUN pip wheel .*--no-deps .* \.$", text, re.M)
    assert re.search(r"pip install .*/wheels/\*\.whl", text)
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    assert cmd[0] in SCRIPTS, cmd
