"""The live page at the API's / : started with the stack, opened in headless Chromium
(Debian's chromium, driven by Playwright), charts drawn with data, no console errors;
a screenshot is saved under tests/artifacts/. With rows of two hosts in the store the page
offers a host selector and a Hosts card, and the chosen host filters what it asks for."""

import os
import shutil
import time
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import ROOT, free_port, run_make, wait_until

ARTIFACTS = ROOT / "tests/artifacts"


def chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("LUMEN_REQUIRE_OPS_TOOLS") == "1":
        pytest.fail("chromium is required (LUMEN_REQUIRE_OPS_TOOLS=1) but not installed")
    pytest.skip("chromium not installed (apt-get install chromium)")


def launch(p, exe):
    """Headless Chromium at `exe`, without the background traffic a first run makes."""
    return p.chromium.launch(
        executable_path=exe,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    )


def watch_errors(page, errors):
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))


@pytest.fixture
def stack(workdir, private_stack):
    env = private_stack(RMB_HZ=20, URE_BASE_HZ=5)
    r = run_make(workdir, "up", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return workdir, env, r.stdout


@pytest.mark.timeout(180)
def test_live_page_draws_charts_with_data(stack):
    exe = chromium()
    from playwright.sync_api import sync_playwright

    cwd, env, out = stack
    url = f"http://127.0.0.1:{env['API_PORT']}/"
    assert f"live page {url}" in out  # make up prints where to look
    errors = []
    with sync_playwright() as p:
        browser = launch(p, exe)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            watch_errors(page, errors)
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
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "live_page.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert (ARTIFACTS / "live_page.png").stat().st_size > 10_000


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


# Two hosts' RMB rows, told apart by their residual (the newest-events table shows no host).
HOSTS = {"alpha": (0.111, 12), "beta": (0.777, 7)}


def seed_two_hosts(path):
    """An SQLite store (with `host`) holding recent RMB rows of alpha and beta,
    interleaved in time, and both in the `hosts` table; returns the rows per host."""
    from lumen import storage, timefmt

    db = storage.connect(path)
    storage.migrate(db, "alpha")
    now = time.time()
    rows = []
    for name, (residual, n) in HOSTS.items():
        for i in range(n):
            t = now - 5 - 20 * i - (7 if name == "beta" else 0)
            kind = "rollback" if i % 4 == 0 else "observe"
            rows.append(
                (timefmt.format(t), f"{name}.core", residual, 0.1, "SAFE", t)
                + (f"fp-{name}", i * 100, kind, name)
            )
    db.close()
    for name in HOSTS:  # stored as each host's ingester stores them
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


@pytest.mark.timeout(120)
def test_host_selector_filters_the_page(workdir, procs):
    exe = chromium()
    from playwright.sync_api import sync_playwright

    seed_two_hosts(workdir / "data/lumen.db")
    port = free_port()
    api = procs.start(
        ROOT / "api/read_only.py",
        "--config",
        ROOT / "configs/api_v18.yaml",
        "--port",
        port,
        env={"LUMEN_DB": "data/lumen.db", "LUMEN_DB_URL": None, "LUMEN_HOST_ID": "alpha"},
    )
    wait_until(lambda: (workdir / "run/api.pid").exists() or api.poll() is not None, what="the API")
    assert api.poll() is None, api.stderr.read().decode(errors="replace")
    errors, requests = [], []
    with sync_playwright() as p:
        browser = launch(p, exe)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            watch_errors(page, errors)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"http://127.0.0.1:{port}/")
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
        finally:
            browser.close()
    assert errors == []
