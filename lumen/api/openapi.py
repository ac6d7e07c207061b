"""The OpenAPI 3 document of the read-only API, served at /openapi.json: paths, parameters
(`_format` and `_stream` included), the media types of each answer (CSV and NDJSON on the
lists), the caching headers (ETag, Cache-Control, Vary, Content-Encoding) and 304."""

from lumen import vocab
from lumen.api import openapi_live


ERROR = {
    "type": "object",
    "required": ["ok", "error", "status"],
    "additionalProperties": False,
    "properties": {
        "ok": {"type": "boolean", "enum": [False]},
        "error": {"type": "string"},
        "status": {"type": "integer"},
    },
}
NUM = {"type": "number"}
STR = {"type": "string"}
MIDI = {"type": "integer", "minimum": 0, "maximum": 127}
SOUND_LEVEL = {
    "type": "object",
    "required": ["notes", "tempo_bpm", "velocity", "program"],
    "additionalProperties": False,
    "properties": {
        "notes": {"type": "array", "items": MIDI, "description": "MIDI notes of the chord"},
        "tempo_bpm": {"type": "number", "minimum": 4, "maximum": 1000},
        "velocity": MIDI,
        "program": dict(MIDI, description="General MIDI program (0 = piano)"),
        "instrument": STR,
    },
}
SOUND_MAP = {
    "type": "object",
    "required": ["ok", "levels", "render"],
    "additionalProperties": False,
    "properties": {
        "ok": {"type": "boolean"},
        "levels": {
            "type": "object",
            "required": list(vocab.LEVELS),
            "additionalProperties": False,
            "properties": {level: SOUND_LEVEL for level in vocab.LEVELS},
        },
        "render": {
            "type": "object",
            "required": ["gate", "sample_rate"],
            "additionalProperties": False,
            "properties": {
                "gate": {"type": "number", "minimum": 0.01, "maximum": 1},
                "sample_rate": {"type": "integer", "minimum": 8000, "maximum": 192000},
            },
        },
    },
}


def _err(desc):
    return {
        "description": desc,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _q(name, schema, desc):
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": desc}


HEADERS = {
    "ETag": {
        "description": 'a weak validator of the body, W/"..."; send it back in If-None-Match '
        "to get 304 while the answer is the same (absent on a streamed answer)",
        "schema": STR,
    },
    "Cache-Control": {"description": "no-cache: keep it, but revalidate", "schema": STR},
    "Vary": {"description": "Accept-Encoding", "schema": STR},
    "Content-Encoding": {
        "description": "gzip when the request's Accept-Encoding takes it (bodies of 1 KB "
        "or more, and streams)",
        "schema": STR,
    },
}
NOT_MODIFIED = {
    "description": "Not Modified: the request's If-None-Match matches the ETag; no body",
    "headers": {k: HEADERS[k] for k in ("ETag", "Cache-Control", "Vary")},
}
TABLE = {"type": "string", "description": "CSV (RFC 4180) with a header row"}
LINES = {"type": "string", "description": "NDJSON: one JSON object per line"}


def _ok(schema, desc="OK", lists=False):
    content = {"application/json": {"schema": schema}}
    if lists:
        content["text/csv"] = {"schema": TABLE}
        content["application/x-ndjson"] = {"schema": LINES}
    return {"description": desc, "headers": HEADERS, "content": content}


def _format(kinds):
    desc = (
        "json (default), csv or ndjson: the rows as a CSV table or one JSON object per line"
        if len(kinds) > 1
        else "json only: this answer is an object (csv and ndjson are for the lists)"
    )
    return _q("_format", {"type": "string", "enum": list(kinds)}, desc)


def document(max_limit):
    time_p = {"type": "string", "format": "date-time"}
    host = _q("host", {"type": "string", "minLength": 1, "maxLength": 200}, "only this host's rows")
    window = _q(
        "window",
        {"type": "string", "pattern": "^[1-9][0-9]{0,5}[smhd]$"},
        "e.g. 300s, 10m, 1h (default 10m; longer than 30d is capped at 30d)",
    )
    common = [
        _q(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": max_limit},
            f"rows per page, 1 to {max_limit}",
        ),
        _q("since", time_p, "only rows at or after this RFC 3339 time"),
        _q("until", time_p, "only rows at or before this RFC 3339 time"),
        _q("entity", {"type": "string", "minLength": 1, "maxLength": 200}, "only this entity_id"),
        _q(
            "cursor",
            {"type": "string", "pattern": "^-?[0-9]{1,12}(\\.[0-9]{1,9})?_[0-9]{1,18}$"},
            "next_cursor of the previous page",
        ),
        host,
    ]
    rmb_item = {
        "type": "object",
        "required": ["ts", "entity_id", "residual", "phase", "risk", "event_type"],
        "properties": {
            "ts": STR,
            "entity_id": STR,
            "residual": NUM,
            "phase": NUM,
            "risk": {"type": "string", "enum": list(vocab.RISK_BANDS)},
            "event_type": STR,
            "host": {"type": "string", "description": "the host that stored the row"},
        },
    }
    ure_item = {
        "type": "object",
        "required": ["ts", "entity_id", "residual", "harmony", "coherence", "action"],
        "properties": {
            "ts": STR,
            "entity_id": STR,
            "residual": NUM,
            "harmony": NUM,
            "coherence": NUM,
            "action": STR,
            "host": {"type": "string", "description": "the host that stored the row"},
        },
    }

    def page(item):
        return {
            "type": "object",
            "required": ["ok", "count", "items", "next_cursor"],
            "properties": {
                "ok": {"type": "boolean"},
                "count": {"type": "integer"},
                "items": {"type": "array", "items": item},
                "next_cursor": {"type": "string", "nullable": True},
            },
        }

    # Every status has the same JSON body, the server's own (408, 413, 431, 503) included.
    errors = {
        "304": NOT_MODIFIED,
        "400": _err("a parameter is missing or invalid, or a malformed request"),
        "404": _err("no such path"),
        "405": _err("only GET and HEAD"),
        "408": _err("the request was not complete within api.request_timeout_s"),
        "413": _err("a request body over 64 KB (a GET carries none)"),
        "414": _err("the URL is longer than api.max_url_bytes"),
        "431": _err("the request head is over 64 KB or has over 100 headers"),
        "503": _err("the database is not available, or too many open connections"),
    }
    server = {k: errors[k] for k in ("304", "400", "405", "408", "413", "414", "431")}
    as_json, as_list = _format(["json"]), _format(["json", "csv", "ndjson"])
    stream = _q(
        "_stream",
        {"type": "string", "enum": ["on", "off"]},
        "on: every matching row, not one page (limit, if given, still caps them), streamed "
        "as it is read",
    )
    last_rmb = {
        "type": "object",
        "properties": {"ts": STR, "residual": NUM, "phase": NUM, "risk": STR},
    }
    last_ure = {
        "type": "object",
        "properties": {"ts": STR, "residual": NUM, "harmony": NUM, "coherence": NUM, "action": STR},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Lumen read-only API",
            "version": "1.8.0",
            "description": "Queries over the store: data/lumen.db, or the PostgreSQL database "
            "many hosts share (blueprint sections 41 and 47). Read-only. Lists also come as "
            "CSV or NDJSON (_format), and whole (_stream=on), streamed. Every answer says "
            "Cache-Control: no-cache; a whole answer has a weak ETag (If-None-Match: 304); "
            "gzip on Accept-Encoding. Every error is {ok: false, error, status}.",
        },
        "paths": {
            "/api/rmb:last": {
                "get": {
                    "summary": "newest RMB row (section 41)",
                    "parameters": [host, as_json],
                    "responses": {
                        "200": _ok(last_rmb, "the newest row, or {} when there is none"),
                        **errors,
                    },
                }
            },
            "/api/ure:last": {
                "get": {
                    "summary": "newest URE row of an entity (default lumen.ure)",
                    "parameters": [common[3], host, as_json],
                    "responses": {
                        "200": _ok(last_ure, "the newest row, or {} when there is none"),
                        **errors,
                    },
                }
            },
            "/api/rmb": {
                "get": {
                    "summary": "RMB rows, newest first",
                    "parameters": common
                    + [
                        _q(
                            "risk",
                            {"type": "string", "enum": list(vocab.RISK_BANDS)},
                            "only this risk band",
                        ),
                        as_list,
                        stream,
                    ],
                    "responses": {"200": _ok(page(rmb_item), lists=True), **errors},
                }
            },
            "/api/ure": {
                "get": {
                    "summary": "URE (v2) rows, newest first",
                    "parameters": common
                    + [
                        _q(
                            "action",
                            {"type": "string", "enum": list(vocab.ACTIONS)},
                            "only this auto_reg_action",
                        ),
                        as_list,
                        stream,
                    ],
                    "responses": {"200": _ok(page(ure_item), lists=True), **errors},
                }
            },
            "/api/alerts": {
                "get": {
                    "summary": "Alertmanager's alerts (logs/alerts.jsonl), newest first",
                    "parameters": common[:3]
                    + common[4:]
                    + [
                        _q(
                            "status",
                            {"type": "string", "enum": list(vocab.ALERT_STATUSES)},
                            "only firing or only resolved alerts",
                        ),
                        as_list,
                        stream,
                    ],
                    "responses": {
                        "200": _ok(page(openapi_live.ALERT_ITEM), lists=True),
                        **errors,
                    },
                }
            },
            "/api/stream": openapi_live.stream_path(host, server),
            "/api/summary": {
                "get": {
                    "summary": "counts and rollback ratio over a window",
                    "parameters": [window, host, as_json],
                    "responses": {
                        "200": _ok(
                            {"type": "object", "required": ["ok", "window_s", "rmb", "ure"]}
                        ),
                        **errors,
                    },
                }
            },
            "/api/hosts": {
                "get": {
                    "summary": "per host: RMB counts and rollback ratio over a window, the "
                    "age of its newest RMB and URE rows",
                    "parameters": [window, as_list],
                    "responses": {
                        "200": _ok(
                            {"type": "object", "required": ["ok", "window_s", "hosts"]},
                            lists=True,
                        ),
                        **errors,
                    },
                }
            },
            "/api/series": {
                "get": {
                    "summary": "per-step buckets for the live page's charts",
                    "parameters": [
                        host,
                        _q(
                            "window",
                            {"type": "string", "pattern": "^[1-9][0-9]{0,5}[smhd]$"},
                            "default 1h; longer than 30d is capped",
                        ),
                        _q(
                            "step",
                            {"type": "string", "pattern": "^[1-9][0-9]{0,4}[smh]$"},
                            "bucket size (default 60s); kept within 5s..24h and raised to give "
                            "at most 2000 buckets",
                        ),
                        as_json,
                    ],
                    "responses": {
                        "200": _ok({"type": "object", "required": ["ok", "rmb", "safety", "ure"]}),
                        **errors,
                    },
                }
            },
            "/api/slo": {
                "get": {
                    "summary": "SLO verdicts (RMB-ROLL-001, RMB-RES-002) over stored rows",
                    "parameters": [host, as_json],
                    "responses": {
                        "200": _ok({"type": "object", "required": ["ok", "result", "verdicts"]}),
                        **errors,
                    },
                }
            },
            "/api/sound": {
                "get": {
                    "summary": "the Safety Music sound map the live page plays (api.sound_map, "
                    "configs/midi_map_v18.json by default): per level its notes, tempo, "
                    "velocity and General MIDI program; read once when the API starts",
                    "responses": {"200": _ok(SOUND_MAP), **server},
                }
            },
            "/": {
                "get": {
                    "summary": "the live page (HTML)",
                    "responses": {
                        "200": {
                            "description": "HTML",
                            "headers": HEADERS,
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        },
                        **server,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "database reachable, ingest lag",
                    "responses": {
                        "200": _ok({"type": "object", "required": ["ok", "db"]}, "healthy"),
                        "503": _ok({"type": "object", "required": ["ok", "db"]}, "unhealthy"),
                        **server,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "this document",
                    "responses": {"200": _ok({"type": "object"}), **server},
                }
            },
        },
        "components": {"schemas": {"Error": ERROR}},
    }
