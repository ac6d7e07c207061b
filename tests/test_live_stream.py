"""The live page on the event stream, in headless Chromium, over the real ingester and API:
it opens /api/stream and gets new rows, alerts and level changes without polling the
lists; an alert appended to logs/alerts.jsonl plays its motif (window.LumenSound of
lumen/api/static/sound.js, its calls recorded) and shows in the Alerts card; a
restarted API is reconnected to with Last-Event-ID and nothing is missed; without
EventSource, or with the stream refused, the page polls, and goes back to the stream."""

import signal
import time
from urllib.parse import urlparse

import pytest

from conftest import emit
from test_live_page import browser_page
from test_stream import SSE, Live, alert, append, log_ts, safety_line

# The page's LumenSound (lumen/api/static/sound.js), recording what it is asked to play
# before doing it (no click here: it plays nothing aloud, and says so by returning false).
SOUND_STUB = """(() => { let real; const calls = [];
  Object.defineProperty(window, "LumenSound", { configurable: true, get() { return real; },
    set(v) {
      real = v; v.calls = calls;
      const level = v.setLevel.bind(v), motif = v.playMotif.bind(v);
      v.setLevel = x => { calls.push(["level", x]); return level(x); };
      v.playMotif = x => { calls.push(["motif", x]); return motif(x); };
    } }); })();"""


def paths(requests, path):
    return [u for u in requests if urlparse(u).path == path]


def wait_js(page, cond, timeout=60_000):
    page.wait_for_function(f"() => {cond}", timeout=timeout, polling=100)


def newest_is(ts):
    """JS: the newest-events table's first row shows `ts`."""
    return f"document.querySelector('#newest td')?.textContent === {as_shown(ts)!r}"


def shown_rows(page):
    return page.locator("#newest tbody tr td:first-child").all_inner_texts()


def as_shown(ts):
    return ts.replace("T", " ")[:23]


@pytest.mark.timeout(240)
def test_the_page_follows_the_stream_without_polling(workdir, procs):
    live = Live(workdir, procs)
    emit(workdir, 40)
    live.stored(40)
    errors, requests = [], []
    with browser_page(errors) as page:
        page.add_init_script(SOUND_STUB)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"http://127.0.0.1:{live.port}/")
        wait_js(
            page, "lumen.stream.state === 'open' && lumen.stream.hellos === 1 && lumen.renders >= 1"
        )
        assert page.evaluate("lumen.stream.mode") == "stream"
        assert shown_rows(page)[0] == as_shown(log_ts(workdir)[-1])  # the list, loaded once
        listed = {p: len(paths(requests, p)) for p in ("/api/rmb", "/api/slo", "/api/alerts")}
        assert listed == {"/api/rmb": 1, "/api/slo": 1, "/api/alerts": 1}
        renders = page.evaluate("lumen.renders")

        emit(workdir, 20)  # new rows arrive as events
        wait_js(page, "lumen.stream.rmb.length === 20")
        assert page.evaluate("lumen.stream.rmb") == log_ts(workdir, 40, 60)
        wait_js(
            page,
            newest_is(log_ts(workdir)[-1]),
        )
        wait_js(page, f"lumen.renders > {renders}")  # the charts, fetched again (throttled)

        # An alert appended to the log and ingested: its motif, the Alerts card.
        append(workdir / "logs/alerts.jsonl", [alert(7)])
        wait_js(page, "lumen.played.length === 1")
        assert page.evaluate("lumen.played[0]") == {
            "motif": "firing",
            "id": 1,
            "alertname": "LumenAlert7",
            "sound": True,
        }
        assert page.evaluate("LumenSound.calls.filter(c => c[0] === 'motif')") == [
            ["motif", "firing"]
        ]
        row = page.locator("#alerts tbody tr").first
        assert row.get_attribute("class") == "firing"
        assert "LumenAlert7" in row.inner_text()
        assert (
            row.locator("td").first.evaluate("e => getComputedStyle(e).color")
            == "rgb(255, 123, 114)"
        )
        append(workdir / "logs/alerts.jsonl", [alert(7, "resolved")])
        wait_js(page, "lumen.played.length === 2")
        assert page.evaluate("LumenSound.calls.filter(c => c[0] === 'motif').map(c => c[1])") == [
            "firing",
            "resolved",
        ]
        row = page.locator("#alerts tbody tr").first
        assert row.get_attribute("class") == "resolved"
        assert (
            row.locator("td").first.evaluate("e => getComputedStyle(e).color") == "rgb(63, 185, 80)"
        )
        assert page.locator("#alerts tbody tr").count() == 2

        # A level change: LumenSound.setLevel, and the level shown.
        now = time.time()
        append(
            workdir / "logs/safety_music_events.jsonl",
            [
                safety_line(f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now - 2 + i))}Z", lv)
                for i, lv in enumerate(["CALM", "TENSE", "TENSE"])
            ],
        )
        wait_js(
            page, "lumen.levels.length && lumen.levels[lumen.levels.length - 1].level === 'TENSE'"
        )
        assert ["level", "TENSE"] in page.evaluate("LumenSound.calls")
        assert page.locator("#levelnow").inner_text() == "TENSE"

        # None of that needed the lists: no poll while the stream is healthy.
        assert {p: len(paths(requests, p)) for p in listed} == listed
        assert len(paths(requests, "/api/stream")) == 1
    assert errors == []


@pytest.mark.timeout(240)
def test_a_restarted_api_is_reconnected_with_last_event_id_missing_nothing(workdir, procs):
    live = Live(workdir, procs)
    errors, streams = [], []
    with browser_page([]) as page:  # refused reconnects while the API is down are expected
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: streams.append(r) if "/api/stream" in r.url else None)
        page.add_init_script(SOUND_STUB)
        page.goto(f"http://127.0.0.1:{live.port}/")
        wait_js(page, "lumen.stream.state === 'open' && lumen.stream.hellos === 1")
        emit(workdir, 10)
        wait_js(page, "lumen.stream.rmb.length === 10")
        last = page.evaluate("lumen.stream.lastId")

        api = next(p for p in procs.started if "read_only.py" in " ".join(map(str, p.args)))
        api.send_signal(signal.SIGTERM)
        assert api.wait(timeout=30) == 0
        emit(workdir, 15)  # while the API is down: stored, not pushed
        append(workdir / "logs/alerts.jsonl", [alert(1)])
        live.stored(25)
        live.stored(1, "alerts")
        (workdir / "run/api.pid").unlink(missing_ok=True)
        live.start_api(live.config, port=live.port)

        wait_js(page, "lumen.stream.rmb.length >= 25 && lumen.played.length === 1")
        assert page.evaluate("lumen.stream.rmb") == log_ts(workdir, 0, 25)  # each once, in order
        assert page.evaluate("lumen.stream.mode") == "stream"
        resumed = [r for r in streams[1:] if r.all_headers().get("last-event-id")]
        assert resumed, [r.url for r in streams]
        assert resumed[-1].all_headers()["last-event-id"] == last
        assert page.evaluate("lumen.played[0].motif") == "firing"
    assert errors == []


@pytest.mark.timeout(240)
def test_without_eventsource_the_page_polls(workdir, procs):
    live = Live(workdir, procs)
    emit(workdir, 5)
    live.stored(5)
    errors, requests = [], []
    with browser_page(errors) as page:
        page.add_init_script("delete window.EventSource;" + SOUND_STUB)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"http://127.0.0.1:{live.port}/")
        wait_js(page, "lumen.stream.mode === 'polling' && lumen.renders >= 1")
        emit(workdir, 5)
        live.stored(10)
        wait_js(
            page,
            newest_is(log_ts(workdir)[-1]),
        )
        append(workdir / "logs/alerts.jsonl", [alert(3)])
        wait_js(page, "lumen.played.length === 1")
        assert page.evaluate("LumenSound.calls.filter(c => c[0] === 'motif')") == [
            ["motif", "firing"]
        ]
        assert len(paths(requests, "/api/rmb")) >= 2 and not paths(requests, "/api/stream")
        assert "polling" in page.locator("#status").inner_text()
    assert errors == []


@pytest.mark.timeout(240)
def test_a_refused_stream_falls_back_to_polling_then_comes_back(workdir, procs):
    live = Live(workdir, procs, max_streams=1)
    taken = SSE(live.port)  # the only slot: the page's stream gets 503
    assert taken.message()["event"] == "hello"
    errors = []
    with browser_page(errors) as page:
        page.goto(f"http://127.0.0.1:{live.port}/")
        wait_js(page, "lumen.stream.mode === 'polling' && lumen.renders >= 1")
        emit(workdir, 3)
        live.stored(3)
        wait_js(
            page,
            newest_is(log_ts(workdir)[-1]),
        )
        taken.close()  # the slot is free: the page tries the stream again, and stays on it
        wait_js(page, "lumen.stream.mode === 'stream' && lumen.stream.state === 'open'", 90_000)
        emit(workdir, 2)
        wait_js(page, "lumen.stream.rmb.length === 2")
    # The one error: the refused stream, a 503 (the console says so).
    assert errors == [
        "Failed to load resource: the server responded with a status of 503 (Service Unavailable)"
    ]
