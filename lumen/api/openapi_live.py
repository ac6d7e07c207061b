"""The OpenAPI parts of what the live page follows (lumen/api/openapi.py puts them in the
document): the alert item of /api/alerts, and /api/stream, whose answer is a stream of
server-sent events rather than one JSON body. Pure data; reads nothing."""

from lumen import vocab

STR = {"type": "string"}

ALERT_ITEM = {
    "type": "object",
    "required": ["id", "ts", "status", "alertname", "labels", "host"],
    "properties": {
        "id": {"type": "integer", "description": "the row's id (also in the stream's events)"},
        "ts": {"type": "string", "description": "when the webhook receiver got it (RFC 3339)"},
        "status": {"type": "string", "enum": list(vocab.ALERT_STATUSES)},
        "alertname": STR,
        "severity": STR,
        "summary": STR,
        "fingerprint": STR,
        "starts_at": STR,
        "ends_at": {"type": "string", "nullable": True},
        "labels": {"type": "object", "additionalProperties": STR},
        "receiver": STR,
        "group_key": STR,
        "host": {"type": "string", "description": "the host that stored the row"},
    },
}

EVENTS = (
    "Server-sent events, each `event:` NAME, `id:` a cursor, `data:` one line of JSON: "
    "hello {now, cursor, host, resumed, retry_ms, heartbeat_s, max_duration_s} on connect; "
    "rmb (an /api/rmb item) per new RMB row; level {ts, level, previous, host} when a host's "
    "Safety Music level changes; alert (an /api/alerts item) per stored alert; slo (as "
    "/api/slo) on connect and when it changes; reset {reason, cursor} when more rows were "
    "missed than a reconnect replays (reload the lists). A comment `: ping` after "
    "heartbeat_s of silence. The stream ends after api.stream.max_duration_s; reconnect "
    "with Last-Event-ID to get every row missed, each once."
)


def stream_path(host, errors):
    """The path item of /api/stream; `host`: the host parameter, `errors`: the error
    answers of every path."""
    cursor = {"type": "string", "pattern": "^[0-9]{1,18}[.][0-9]{1,18}[.][0-9]{1,18}$"}
    return {
        "get": {
            "summary": "server-sent events: new RMB rows, level changes, alerts, SLO verdicts",
            "description": EVENTS,
            "parameters": [
                host,
                {
                    "name": "last_event_id",
                    "in": "query",
                    "required": False,
                    "schema": cursor,
                    "description": "resume after this event id (for clients that cannot send "
                    "the Last-Event-ID header; the header wins)",
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": cursor,
                    "description": "resume after this event id (EventSource sends it)",
                },
            ],
            "responses": {
                "200": {
                    "description": EVENTS,
                    "headers": {"Cache-Control": {"description": "no-cache", "schema": STR}},
                    "content": {"text/event-stream": {"schema": STR}},
                },
                **{k: v for k, v in errors.items() if k != "304"},
                "503": {
                    "description": "api.stream.max_streams are open (retry after Retry-After "
                    "seconds, or poll the lists), or the database is not available",
                    "headers": {"Retry-After": {"description": "seconds", "schema": STR}},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        }
    }
