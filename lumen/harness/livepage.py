"""The live page in headless Chromium: the browser the tests use, and the README's
screenshot of a real run (tools/live_page_shot.py).

`shoot()`: in a new temp directory, on free ports, `make up` starts a private stack on the
default configs (config overrides and Makefile variables of the caller's environment left
out); after `minutes` the live page is opened in headless Chromium (Debian's chromium,
driven by Playwright's sync API) and, once it reports ready (`window.lumen.ready`: every
chart has data) without console errors, written as a PNG. Then `make down`; whatever the
stack's run/*.pid still names alive is SIGKILLed, by PID; the temp directory is removed.
The clean-up runs whatever happened before it, SIGTERM and Ctrl-C included.

Writes only the PNG and the temp directory; touches no other stack (a private stack's
supervisord belongs to its own directory, see lumen/supervise.py).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lumen import CONFIGS, ROOT
from lumen.config import env_keys
from lumen.harness import free_port, make
from lumen.proc import first_line
from lumen.supervise import pid_alive

LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 1100}
# The page has drawn every chart with data, twice (the second from a later poll).
READY = "window.lumen && window.lumen.ready && window.lumen.renders >= 2"
PORTS = ("RMB_EXPORTER_PORT", "URE_EXPORTER_PORT", "API_PORT", "ALERT_RECEIVER_PORT")


class Failed(Exception):
    """A step of the screenshot failed: one line for the operator."""


def find_chromium():
    """The path of a chromium executable on PATH, or None."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def launch(p, exe):
    """Headless Chromium at `exe` (a Playwright instance `p`), without the background
    traffic a first run makes."""
    return p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS)


def closed_stream(request):
    """A request that 'failed' because the page closed its EventSource (another host
    chosen, the fallback to polling): the page's doing, not an error."""
    return request.resource_type == "eventsource" and request.failure == "net::ERR_ABORTED"


def watch_errors(page, errors):
    """Append to `errors` every console error, page error and failed request of `page`
    (but an event stream the page closed itself)."""
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "requestfailed",
        lambda r: None if closed_stream(r) else errors.append(f"request failed: {r.url}"),
    )


def default_env(**env):
    """os.environ without any config override (the configs' x-env variables) or Makefile
    variable (`NAME ?= default`), plus `env`: the stack runs the default configs."""
    drop = set(re.findall(r"^([A-Z][A-Z0-9_]*) \?=", (ROOT / "Makefile").read_text(), re.M))
    for schema in (CONFIGS / "schemas").iterdir():
        if schema.name.endswith(".schema.json"):
            drop |= {var for _, var in env_keys(json.loads(schema.read_text()))}
    out = {k: v for k, v in os.environ.items() if k not in drop}
    out.update({k: str(v) for k, v in env.items()})
    return out


def stop_stack(cwd, env, say):
    """`make down` in `cwd`, then SIGKILL (by PID) whatever its run/*.pid names alive."""
    try:
        r = make(cwd, env, "down", timeout=120)
        if r.returncode != 0:
            say(f"make down exited {r.returncode}: {r.stderr.strip()}")
    except Exception as e:  # a stuck make must not keep the processes alive
        say(f"make down failed: {e}")
    for pidfile in Path(cwd, "run").glob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
        if pid_alive(pid):
            say(f"killing {pidfile.stem} (pid {pid}), still alive after make down")
            os.kill(pid, signal.SIGKILL)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def capture(url, out, exe, timeout_s):
    """Open `url` in headless Chromium, wait until the page is ready, write `out`."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        raise Failed("playwright is not installed (pip install -e '.[test]')") from None
    errors, step = [], "starting chromium"
    try:
        with sync_playwright() as p:
            browser = launch(p, exe)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                watch_errors(page, errors)
                step = f"opening {url}"
                page.goto(url)
                step = f"waiting {timeout_s:.0f}s for the page to be ready"
                page.wait_for_function(READY, timeout=timeout_s * 1000, polling=500)
                step = "taking the screenshot"
                state = page.evaluate("[lumen.points, document.getElementById('status').innerText]")
                page.screenshot(path=str(out), full_page=True)
            finally:
                browser.close()
    except Error as e:
        raise Failed(
            f"{step}: {first_line(e)}" + (f" (page errors: {errors})" if errors else "")
        ) from None
    if errors:
        raise Failed(f"the page logged errors: {errors}")
    return state


def shoot(out, minutes, profile=None, parent=None, say=None):
    """The live page `minutes` after `make up` of a private stack (in a new directory under
    `parent`, default the system's temp dir), as the PNG `out`. Returns 0, 1 when a step
    failed (said on stderr), 130 when interrupted; the stack is down either way."""
    say = say or (lambda m: print(f"[shot] {m}", file=sys.stderr, flush=True))
    exe = find_chromium()
    if exe is None:
        say("error: chromium not found on PATH (apt-get install chromium)")
        return 1
    env = default_env(
        **{k: free_port() for k in PORTS}, **({"PROFILE": profile} if profile else {})
    )
    cwd = Path(tempfile.mkdtemp(prefix="lumen-shot-", dir=parent))
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        say(f"make up in {cwd} (API on :{env['API_PORT']})")
        try:
            r = make(cwd, env, "up", timeout=300)
        except subprocess.TimeoutExpired:
            raise Failed("make up did not finish within 300s") from None
        if r.returncode != 0:
            raise Failed(f"make up exited {r.returncode}: {r.stderr.strip()}")
        end = time.monotonic() + minutes * 60
        while (left := end - time.monotonic()) > 0:
            say(f"running, {left:.0f}s to go")
            time.sleep(min(30.0, left))
        points, status = capture(f"http://127.0.0.1:{env['API_PORT']}/", out, exe, 120)
        say(f"wrote {out}: {points} buckets drawn; {status}")
        return 0
    except Failed as e:
        say(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        say("interrupted: stopping the stack")
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up is not cut short
        stop_stack(cwd, env, say)
        shutil.rmtree(cwd, ignore_errors=True)
        signal.signal(signal.SIGTERM, old)
