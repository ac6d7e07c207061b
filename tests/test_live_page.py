"""The live page at the API's / : started with the stack, opened in headless Chromium
(Debian's chromium, driven by Playwright), charts drawn with data, no console errors;
a screenshot is saved under tests/artifacts/."""

import os
import shutil

import pytest

from conftest import ROOT, run_make

ARTIFACTS = ROOT / "tests/artifacts"


def chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("LUMEN_REQUIRE_OPS_TOOLS") == "1":
        pytest.fail("chromium is required (LUMEN_REQUIRE_OPS_TOOLS=1) but not installed")
    pytest.skip("chromium not installed (apt-get install chromium)")


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
        browser = p.chromium.launch(
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
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
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
