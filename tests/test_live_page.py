"""The live page at the API's / : started with the stack, opened in headless Chromium
(Debian's chromium, driven by Playwright), charts drawn with data, no console errors;
a screenshot is saved under tests/artifacts/. With rows of two hosts in the store the page
offers a host selector and a Hosts card, and the chosen host filters what it asks for.
Issue 16: the rollback-ratio axis scales to the data (a spike's 0.7 stays on the chart),
legends show the newest values when not hovering, the bucket in progress is not drawn (it
would look like a drop), and the x axis starts at the data when it is younger than the
window, every chart and the level strip on one range and one pixel span."""

import contextlib
import math
import os
import signal
import time
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import (
    unavailable,
    ROOT,
    STACK,
    free_port,
    pid_alive,
    pids_in,
    run_make,
    stop_stack,
    wait_until,
)
from lumen.harness.livepage import find_chromium, launch, watch_errors

ARTIFACTS = ROOT / "tests/artifacts"
CHARTS = ("residual", "events", "ure")


def chromium():
    exe = find_chromium()
    if exe:
        return exe
    unavailable("chromium is not installed (apt-get install chromium)")


# What the page drew at its last render, read in one go (no refresh in between): the API's
# answer, the instant it was drawn for, each chart's x data and range, legends, the strip.
STATE = """() => {
  const L = window.lumen, out = { series: L.series, now: L.now, xRange: L.xRange,
    strip: L.strip, settle: L.settle_s, charts: {} };
  for (const [id, u] of Object.entries(L.charts)) {
    const r = u.over.getBoundingClientRect();
    out.charts[id] = { data: u.data, x: [u.scales.x.min, u.scales.x.max], left: r.left,
      width: r.width, ratio_max: u.scales.ratio ? u.scales.ratio.max : null,
      legend: [...document.querySelectorAll(`#${id} .u-legend .u-value`)].map(e => e.textContent) };
  }
  return out;
}"""


@contextlib.contextmanager
def browser_page(errors):
    """A page of headless Chromium (1280x1100) whose console errors go to `errors`."""
    exe = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p, exe)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            watch_errors(page, errors)
            yield page
        finally:
            browser.close()


def state_when(page, cond, timeout=30_000):
    """The page's STATE at the first render where the JS expression `cond` holds."""
    handle = page.wait_for_function(f"() => ({cond}) ? ({STATE})() : null", timeout=timeout)
    return handle.json_value()


def near(text, value, decimals):
    """A legend text is `value` with `decimals` decimals."""
    return abs(float(text) - value) <= 0.5 * 10**-decimals + 1e-9


def screenshot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    assert (ARTIFACTS / name).stat().st_size > 10_000


def aligned(st):
    """Every chart and the level strip: the same x range and the same pixel span."""
    strip = st["strip"]
    assert strip["range"] == st["xRange"]
    for cid in CHARTS:
        chart = st["charts"][cid]
        assert chart["x"] == st["xRange"], cid
        assert abs(chart["left"] - strip["left"]) <= 1, (cid, chart["left"], strip["left"])
        assert abs(chart["width"] - strip["width"]) <= 1, (cid, chart["width"], strip["width"])


@pytest.fixture
def stack(workdir, private_stack):
    env = private_stack(RMB_HZ=20, URE_BASE_HZ=5)
    r = run_make(workdir, "up", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return workdir, env, r.stdout


@pytest.mark.timeout(240)
def test_live_page_draws_charts_with_data(stack):
    cwd, env, out = stack
    url = f"http://127.0.0.1:{env['API_PORT']}/"
    assert f"live page {url}" in out  # make up prints where to look
    errors = []
    with browser_page(errors) as page:
        page.goto(url)
        # Data reaches the page only through emitter -> logs -> ingest -> SQLite -> API.
        page.wait_for_function(
            "window.lumen && window.lumen.ready && window.lumen.renders >= 2",
            timeout=90_000,
            polling=500,
        )
        assert page.locator("#residual canvas").count() >= 1
        assert page.locator("#events canvas").count() >= 1
        assert page.locator("#ure canvas").count() >= 1
        rows = page.locator("#newest tbody tr").count()
        assert rows >= 1
        assert page.locator("#slo tbody tr").count() == 3  # two policies + overall
        assert "updated" in page.locator("#status").inner_text()
        # One host in the store: no host selector, no Hosts card.
        assert page.evaluate("window.lumen.hosts.length") == 1
        assert page.locator("#host").is_hidden()
        assert page.locator("#hostcard").is_hidden()

        # A render whose API answer holds the bucket in progress (the emitter writes on).
        st = state_when(
            page,
            "window.lumen.ready && window.lumen.series.rmb.some("
            "b => b.t + window.lumen.series.step_s > window.lumen.now)",
            timeout=60_000,
        )
        s, now = st["series"], st["now"]
        step, window = s["step_s"], s["window_s"]
        in_progress = [b["t"] for b in s["rmb"] if b["t"] + step > now]
        events = st["charts"]["events"]
        # (c) The bucket in progress is not drawn; every complete one is, with its count.
        assert in_progress and not set(in_progress) & set(events["data"][0])
        done = [
            b for b in s["rmb"] if b["t"] >= now - window and b["t"] + step + st["settle"] <= now
        ]
        assert events["data"][0] == [b["t"] for b in done]
        assert events["data"][1] == [b["events"] for b in done]
        assert all(t + step <= now for t in st["charts"]["ure"]["data"][0])
        # (d) A fresh stack's data is younger than the window: the axis starts at its first
        # bucket and ends now, on every chart and the level strip.
        first = min(events["data"][0][0], st["charts"]["ure"]["data"][0][0], st["strip"]["first"])
        assert st["xRange"] == [first, now]
        assert now - first < window
        aligned(st)
        # (b) Not hovering: each legend shows its series' newest value, none "--".
        for cid in CHARTS:
            legend = st["charts"][cid]["legend"]
            assert legend and all(v.strip() not in ("", "--", "–") for v in legend), (cid, legend)
        newest = [col[-1] for col in events["data"]]
        assert near(events["legend"][1], newest[1], 0) and near(events["legend"][2], newest[2], 0)
        assert near(events["legend"][3], newest[3], 4), (events["legend"], newest)
        screenshot(page, "live_page.png")
    assert errors == []


def test_page_assets_are_served_read_only(stack):
    import requests

    cwd, env, _ = stack
    base = f"http://127.0.0.1:{env['API_PORT']}"
    r = requests.get(base + "/", timeout=5)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert requests.get(base + "/static/uPlot.iife.min.js", timeout=5).status_code == 200
    for bad in ("/static/../read_only.py", "/static/vendor/uplot-1.6.31/LICENSE", "/static/x.js"):
        assert requests.get(base + bad, timeout=5).status_code == 404
    assert requests.post(base + "/", timeout=5).status_code == 405
    lic = (ROOT / "lumen/api/static/vendor/uplot-1.6.31/LICENSE").read_text()
    assert "MIT License" in lic


def seed(path, rows):
    """An SQLite store (with `host`) holding RMB `rows` (each ending with its host), each
    host's rows stored as its ingester stores them (and the host in the `hosts` table)."""
    from lumen import storage

    db = storage.connect(path)
    storage.migrate(db, rows[0][-1])
    db.close()
    for name in dict.fromkeys(r[-1] for r in rows):
        store = storage.SqliteStore(path, name)
        with store.transaction():
            mine = [r[:-1] for r in rows if r[-1] == name]
            store.insert("rmb", mine)
            store.note_newest("rmb", mine)
        store.close()
    db = storage.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    db.close()
    return rows


def rmb_row(t, name, residual, kind, offset):
    from lumen import timefmt

    return (timefmt.format(t), f"{name}.core", residual, 0.1, "SAFE", t) + (
        f"fp-{name}",
        offset,
        kind,
        name,
    )


def serve(procs, host_id):
    """The API alone on the store at data/lumen.db; returns the live page's URL."""
    port = free_port()
    api = procs.start(
        ROOT / "api/read_only.py",
        "--config",
        ROOT / "configs/api_v18.yaml",
        "--port",
        port,
        env={"LUMEN_DB": "data/lumen.db", "LUMEN_DB_URL": None, "LUMEN_HOST_ID": host_id},
    )
    wait_until(
        lambda: (procs.cwd / "run/api.pid").exists() or api.poll() is not None, what="the API"
    )
    assert api.poll() is None, api.stderr.read().decode(errors="replace")
    return f"http://127.0.0.1:{port}/"


# Two hosts' RMB rows, told apart by their residual (the newest-events table shows no host).
HOSTS = {"alpha": (0.111, 12), "beta": (0.777, 7)}


def seed_two_hosts(path):
    """Recent RMB rows of alpha and beta, interleaved in time; returns the rows."""
    now = time.time()
    rows = []
    for name, (residual, n) in HOSTS.items():
        for i in range(n):
            t = now - 5 - 20 * i - (7 if name == "beta" else 0)
            rows.append(
                rmb_row(t, name, residual, "rollback" if i % 4 == 0 else "observe", i * 100)
            )
    return seed(path, rows)


# Per host, (events, rollbacks) of 15 complete 10 s buckets (the newest ended 50 s before the
# rows were written): calm never rolls back; spiky has a 0.7 spike in bucket 7 and 1 of 4
# in its newest bucket.
BUCKETS = 15


def counts(name, k):
    if name == "spiky" and k == 7:
        return 10, 7
    if name == "spiky" and k == BUCKETS - 1:
        return 4, 1
    return 10, 0


def seed_spike(path):
    """The rows of `counts`; returns the first bucket's start."""
    base = math.floor(time.time() / 10) * 10 - 200
    rows = []
    for name in ("calm", "spiky"):
        for k in range(BUCKETS):
            n, rb = counts(name, k)
            for i in range(n):
                t = base + 10 * k + 0.5 + 0.8 * i
                rows.append(rmb_row(t, name, 0.3, "rollback" if i < rb else "observe", len(rows)))
    seed(path, rows)
    return base


def pick(page, name):
    """Choose host `name` ("" = all); the state of the first render for it."""
    page.select_option("#host", name)
    return state_when(page, f"window.lumen.host === {name!r} && window.lumen.renders > 0")


@pytest.mark.timeout(120)
def test_ratio_axis_legends_and_x_range_on_seeded_buckets(workdir, procs):
    base = seed_spike(workdir / "data/lumen.db")
    errors = []
    with browser_page(errors) as page:
        page.goto(serve(procs, "calm"))
        st = state_when(page, "window.lumen.renders >= 1 && window.lumen.hosts.length === 2")
        # (d) Data of the last 200 s: the axis starts at its first bucket, on every chart
        # (the URE chart and the strip have no data: they keep the same range).
        assert st["charts"]["events"]["data"][0] == [base + 10 * k for k in range(BUCKETS)]
        assert st["xRange"] == [base, st["now"]]
        aligned(st)
        # (a) All hosts: a 7 of 20 spike (0.35) is on the chart.
        assert max(st["charts"]["events"]["data"][3]) == pytest.approx(0.35)
        assert 0.35 <= st["charts"]["events"]["ratio_max"] <= 1

        # The spiky host: its 0.7 is on the chart, which ends at 1 at most.
        st = pick(page, "spiky")
        ev = st["charts"]["events"]
        assert max(ev["data"][3]) == pytest.approx(0.7)
        assert 0.7 <= ev["ratio_max"] <= 1
        # (b) Not hovering: the newest bucket's 4 events, 1 rollback, ratio 0.25.
        assert ev["legend"][1:] == ["4", "1", "0.2500"]
        assert ev["legend"][0] not in ("", "--")
        screenshot(page, "live_page_spike.png")
        # Hovering the spike's bucket shows its values; leaving, the newest again.
        x, y = page.evaluate(
            """t => { const u = window.lumen.charts.events, r = u.over.getBoundingClientRect();
               return [r.left + u.valToPos(t, "x"), r.top + r.height / 2]; }""",
            base + 70,
        )
        page.mouse.move(x, y)
        legend = (
            "[...document.querySelectorAll('#events .u-legend .u-value')].map(e => e.textContent)"
        )
        page.wait_for_function(f"{legend}.slice(1).join() === '10,7,0.7000'", timeout=10_000)
        page.mouse.move(x, 2)  # above the charts, in the header
        page.wait_for_function(f"{legend}.slice(1).join() === '4,1,0.2500'", timeout=10_000)

        # The calm host: no rollbacks, the SLO line (0.05) still on the chart with headroom,
        # the axis not stretched.
        st = pick(page, "calm")
        ev = st["charts"]["events"]
        assert max(ev["data"][3]) == 0
        assert 0.05 * 1.15 <= ev["ratio_max"] <= 0.25
        assert ev["legend"][1:] == ["10", "0", "0.0000"]
    assert errors == []


@pytest.mark.timeout(120)
def test_host_selector_filters_the_page(workdir, procs):
    seed_two_hosts(workdir / "data/lumen.db")
    url = serve(procs, "alpha")
    errors, requests = [], []
    with browser_page(errors) as page:
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        page.wait_for_function(
            "window.lumen.renders >= 1 && window.lumen.hosts.length === 2",
            timeout=30_000,
            polling=100,
        )
        # The selector: all hosts, then each host; the card: one row per host.
        assert page.locator("#host").is_visible()
        assert page.locator("#host option").all_inner_texts() == ["all hosts", "alpha", "beta"]
        assert page.locator("#host").input_value() == ""
        assert page.locator("#hostcard").is_visible()
        cards = page.locator("#hosts tbody tr")
        assert cards.count() == 2
        assert cards.nth(0).locator("td").all_inner_texts()[:3] == ["alpha", "12", "0.2500"]
        assert cards.nth(1).locator("td").all_inner_texts()[:3] == ["beta", "7", "0.2857"]
        assert cards.nth(0).locator("td").nth(3).inner_text().endswith("s ago")
        # All hosts: the newest events are both hosts' rows.
        shown = set(page.locator("#newest tbody tr td:nth-child(3)").all_inner_texts())
        assert shown == {"0.111", "0.777"}

        mark = len(requests)
        page.select_option("#host", "beta")
        page.wait_for_function(
            "window.lumen.host === 'beta'"
            " && [...document.querySelectorAll('#newest tbody tr td:nth-child(3)')]"
            ".every(td => td.textContent === '0.777')",
            timeout=15_000,
            polling=100,
        )
        after = requests[mark:]
        series = [u for u in after if urlparse(u).path == "/api/series"]
        assert series, after
        assert parse_qs(urlparse(series[0]).query)["host"] == ["beta"]
        for path in ("/api/series", "/api/slo", "/api/rmb"):
            asked = [u for u in after if urlparse(u).path == path]
            assert asked and all(
                parse_qs(urlparse(u).query).get("host") == ["beta"] for u in asked
            ), (path, asked)
        # Only beta's rows: all 7 of them (fewer than the table's 15).
        assert page.locator("#newest tbody tr").count() == HOSTS["beta"][1]
        assert page.locator("#host").input_value() == "beta"
        assert "on beta" in page.locator("#status").inner_text()
        assert page.locator("#hosts tbody tr.sel td").first.inner_text() == "beta"

        # Back to all hosts: no host= any more.
        mark = len(requests)
        page.select_option("#host", "")
        page.wait_for_function(
            "window.lumen.host === '' && document.querySelectorAll('#newest tbody tr')"
            ".length === 15",
            timeout=15_000,
            polling=100,
        )
        series = [u for u in requests[mark:] if urlparse(u).path == "/api/series"]
        assert series and "host" not in parse_qs(urlparse(series[0]).query)
    assert errors == []


# ------------------------------------------------------------ the README's screenshot
SHOT = ROOT / "tools/live_page_shot.py"


class ShotDir:
    """The --dir of tools/live_page_shot.py, where its stack's directory is made. When the
    test ends, whatever the tool's stack left behind is stopped: `make down` in a directory
    still there, then SIGKILL for each PID of the stack seen running while the tool ran."""

    def __init__(self, workdir):
        self.path = workdir / "tmp"
        self.path.mkdir()
        self.stack = None

    def pids(self):
        """{name: PID} of the stack's processes once they all run, else None."""
        for run in self.path.glob("lumen-shot-*/run"):
            now = pids_in(run)
            stack = {name: now.get(name) for name in STACK | {"supervisord"}}
            if all(pid and pid_alive(pid) for pid in stack.values()):
                self.stack = stack
                return stack
        return None

    def cleanup(self):
        for left in self.path.glob("lumen-shot-*"):
            stop_stack(left)
        for pid in (self.stack or {}).values():
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def shot_dir(workdir):
    d = ShotDir(workdir)
    yield d
    d.cleanup()


@pytest.mark.timeout(240)
def test_live_page_shot_writes_the_png_and_removes_its_stack(workdir, procs, shot_dir):
    chromium()
    out, tmp = workdir / "shot.png", shot_dir.path
    tool = procs.start(SHOT, "--minutes", "0.05", "--out", out, "--dir", tmp)
    # Note the stack's PIDs while the tool runs.
    wait_until(lambda: [shot_dir.pids(), tool.poll() is not None][1], timeout=220, what="the tool")
    err = tool.communicate(timeout=10)[1].decode(errors="replace")
    assert tool.returncode == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "buckets drawn" in err and "make up in" in err
    assert shot_dir.stack, "the stack was never seen running"
    assert not [name for name, pid in shot_dir.stack.items() if pid_alive(pid)]
    assert not list(tmp.glob("lumen-shot-*"))  # the stack's directory is gone


@pytest.mark.timeout(240)
def test_live_page_shot_stops_its_stack_on_sigterm(workdir, procs, shot_dir):
    chromium()
    tmp = shot_dir.path
    tool = procs.start(SHOT, "--minutes", "10", "--out", workdir / "x.png", "--dir", tmp)
    pids = wait_until(shot_dir.pids, timeout=120, what="the tool's stack")
    tool.send_signal(signal.SIGTERM)
    _, err = tool.communicate(timeout=120)
    assert tool.returncode == 130, err.decode(errors="replace")
    assert not [name for name, pid in pids.items() if pid_alive(pid)]
    assert not list(tmp.glob("lumen-shot-*"))
    assert not (workdir / "x.png").exists()
