"""YAML configs validated against their JSON Schema, with env and flag overrides.

Precedence, lowest first: the YAML file, environment variables, command-line flags.
A config schema names the variable that overrides a key with `"x-env": "NAME"` next to
that key, so the mapping is data in `configs/schemas/`, not code. Env values are read as
YAML scalars ("0.8" is a number, "[RISK]" a list; for a numeric key also what float()
reads, e.g. "1e-3"; for a string key the value as it is) and the result is validated again.

Which schema: entry points name it (`load(path, "rmb_v17")`); with no name the config's
own top-level keys choose it (the schema whose required top-level keys it has), so a copy
of a config under any file name loads the same way. See docs/configuration.md.

Checked for every config, whatever its schema:
- the file is a readable UTF-8 YAML mapping;
- no number anywhere is NaN or infinite (YAML `.nan`, `.inf`, env `nan`, flag `--hz inf`);
- after all overrides, the schema's annotations: `"x-resolve": true` (a host to bind:
  it must resolve locally; `0.0.0.0` and `::` always do) and `"x-parent-dir": true` (a
  file to create: its directory must exist, unless the path is relative and stays inside
  the working directory, where it is created on first use like the default `data/`).

A bad config raises ConfigError with one line: file (and the env variable or flag that
set the value), key path, what was expected. Entry points turn it into that line on
stderr and exit status 2.
"""

import functools
import json
import math
import os
import socket
import threading
from pathlib import Path

import yaml

from . import CONFIGS, SCHEMAS

MAX_BYTES = 1 << 20  # a config is small; this stops a log file named by mistake
RESOLVE_TIMEOUT_S = 5.0  # a host name that does not resolve by then is an error
ANY_ADDRESS = ("0.0.0.0", "::")


class ConfigError(Exception):
    """One line: whatever the message holds, it never spans lines."""

    def __init__(self, msg):
        super().__init__(str(msg).replace("\r", "\\r").replace("\n", "\\n"))


def shipped(path):
    """A file a config names: absolute, or relative to the working directory when it exists
    there; else a `configs/...` or `schemas/...` path is the file Lumen ships
    (lumen.CONFIGS, lumen.SCHEMAS), wherever Lumen is installed."""
    p = Path(path)
    if p.is_absolute() or p.exists() or len(p.parts) < 2:
        return p
    base = {"configs": CONFIGS, "schemas": SCHEMAS}.get(p.parts[0])
    return base.joinpath(*p.parts[1:]) if base else p


# --- schemas ---------------------------------------------------------------------------


def kinds():
    """The known config kinds: the names of `configs/schemas/<kind>.schema.json`."""
    suffix = ".schema.json"
    return sorted(p.name[: -len(suffix)] for p in (CONFIGS / "schemas").glob(f"*{suffix}"))


@functools.lru_cache(maxsize=None)
def _schema_for(name):
    p = CONFIGS / "schemas" / f"{name}.schema.json"
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"no config schema {name!r} (known: {', '.join(kinds())})") from None


def _annotated(schema, keyword, prefix=()):
    """[(keypath, value, subschema)] for every object property carrying `keyword`."""
    out = []
    if keyword in schema:
        out.append((prefix, schema[keyword], schema))
    for key, sub in schema.get("properties", {}).items():
        out.extend(_annotated(sub, keyword, prefix + (key,)))
    return out


def env_keys(schema, prefix=()):
    """[(("exporter", "port"), "RMB_EXPORTER_PORT"), ...] for every x-env in a schema."""
    return [(path, var) for path, var, _ in _annotated(schema, "x-env", prefix)]


def _fits(cfg):
    """Kinds whose schema's required top-level keys the config has; those whose keys all
    belong to the schema come first (the others only in the list if none does)."""
    keys = set(cfg)
    fit, loose = [], []
    for kind in kinds():
        s = _schema_for(kind)
        if set(s.get("required", ())) <= keys:
            (fit if keys <= set(s.get("properties", {})) else loose).append(kind)
    return fit or loose


def detect(cfg, where):
    """The kind of config `cfg` is (a mapping), chosen by its top-level keys."""
    found = _fits(cfg)
    if len(found) == 1:
        return found[0]
    known = ", ".join(kinds())
    if found:
        raise ConfigError(
            f"{where}: ambiguous config: its top-level keys fit "
            f"{' and '.join(found)}; remove the keys of the other kind"
        )
    closest = ""
    keys = set(cfg)
    gaps = []
    for kind in kinds():
        s = _schema_for(kind)
        props = set(s.get("properties", {}))
        if keys & props:  # distance: keys it lacks plus keys it does not know
            gaps.append((len(set(s.get("required", ())) - keys) + len(keys - props), kind))
    gaps.sort()
    if gaps and (len(gaps) == 1 or gaps[0][0] < gaps[1][0]):
        kind = gaps[0][1]
        missing = sorted(set(_schema_for(kind).get("required", ())) - keys)
        closest = f"; closest is {kind}, which also needs {', '.join(missing)}"
    have = ", ".join(sorted(map(str, keys))) or "none"
    raise ConfigError(
        f"{where}: not a known kind of config (top-level keys: {have}){closest}; "
        f"known kinds: {known}"
    )


# --- reading ---------------------------------------------------------------------------


def _read(path):
    """The YAML value in the file at `path`, or ConfigError with one line."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read config file: permission denied") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror or e}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: over {MAX_BYTES} bytes, too large for a config file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} on line {line})"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            at = f" (line {mark.line + 1})"
        elif isinstance(getattr(e, "position", None), int):
            at = f" (line {text[: e.position].count(chr(10)) + 1})"
        else:
            at = ""
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or e
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None


# --- checks ----------------------------------------------------------------------------


def _dotted(keypath):
    return ".".join(str(k) for k in keypath) or "(top level)"


def _finite(value, where, keypath=()):
    """ConfigError for the first NaN or infinity anywhere in `value` (or a structure that
    contains itself through YAML aliases, which nothing downstream could walk)."""
    seen, stack = set(), set()

    def walk(v, kp):
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{where}: {_dotted(kp)}: {v} is not a finite number")
        if not isinstance(v, (dict, list)):
            return
        if id(v) in stack:
            raise ConfigError(f"{where}: {_dotted(kp)}: contains itself (recursive YAML alias)")
        if id(v) in seen:
            return
        seen.add(id(v))
        stack.add(id(v))
        items = v.items() if isinstance(v, dict) else enumerate(v)
        for k, sub in items:
            walk(sub, kp + (k,))
        stack.discard(id(v))

    walk(value, tuple(keypath))


def _check(cfg, schema, where):
    # The compiled validator says yes or no (jsonschema_rs, loaded by every process that
    # reads events anyway); only a bad config loads the jsonschema library (~5 MB), whose
    # best_match names the most relevant error.
    try:
        if _validator(json.dumps(schema, sort_keys=True)).is_valid(cfg):
            return
    except (ValueError, TypeError, OverflowError):  # a value JSON has no type for (a YAML date)
        pass
    import jsonschema

    v = jsonschema.Draft7Validator(schema)
    err = jsonschema.exceptions.best_match(v.iter_errors(cfg))
    if err is not None:
        raise ConfigError(f"{where}: {_dotted(err.absolute_path)}: {err.message}")


@functools.lru_cache(maxsize=None)
def _validator(schema_text):
    import jsonschema_rs

    return jsonschema_rs.Draft7Validator(json.loads(schema_text))


def _wants_number(schema):
    t = schema.get("type")
    types = set(t) if isinstance(t, list) else {t}
    return bool(types & {"number", "integer"}), "integer" in types and "number" not in types


def _env_value(raw, schema):
    """An env value read as a YAML scalar; for a string key, as it is (YAML would read
    "::" as a mapping and "yes" as true); for a numeric key, also as float() reads it
    (YAML 1.1 reads "1e-3" and "nan" as strings)."""
    if schema.get("type") == "string":
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    numeric, integer = _wants_number(schema)
    if numeric and isinstance(value, str):
        try:
            f = float(raw.strip())
        except ValueError:
            return value
        return int(f) if integer and math.isfinite(f) and f.is_integer() else f
    return value


def _resolves(host):
    """None if `host` resolves for binding (the address family the server uses), else why not.
    Local resolution only (getaddrinfo), bounded by RESOLVE_TIMEOUT_S."""
    if host in ANY_ADDRESS:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out = {}

    def run():
        try:
            socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
        except socket.gaierror as e:
            out["why"] = e.strerror or str(e)
        except (OSError, ValueError) as e:  # UnicodeError (bad IDNA label), NUL byte
            out["why"] = str(e) or type(e).__name__
        else:
            out["why"] = None

    t = threading.Thread(target=run, name="config-resolve", daemon=True)
    t.start()
    t.join(RESOLVE_TIMEOUT_S)
    if t.is_alive():
        return f"no answer within {RESOLVE_TIMEOUT_S:g} s"
    return out["why"]


def _parent_dir_problem(value):
    """None if a file at `value` can be created, else why not (see the module docstring)."""
    p = Path(value)
    if p.is_dir():
        return f"{value} is a directory"
    parent = p.parent
    if parent.is_dir():
        return None
    if parent.exists():
        return f"{parent} is not a directory"
    if not p.is_absolute() and ".." not in p.parts:
        return None  # created under the working directory on first use, like data/
    return f"directory {parent} does not exist"


def _lookup(cfg, keypath):
    node = cfg
    for k in keypath:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _annotations(cfg, schema, path, origin):
    """The checks a schema asks for with x-resolve / x-parent-dir, on the final values."""
    for keypath, on, _ in _annotated(schema, "x-resolve"):
        host = _lookup(cfg, keypath)
        if on and isinstance(host, str):
            why = _resolves(host)
            if why:
                raise ConfigError(
                    f"{origin.get(keypath, path)}: {_dotted(keypath)}: "
                    f"cannot resolve {host!r} ({why})"
                )
    for keypath, on, _ in _annotated(schema, "x-parent-dir"):
        value = _lookup(cfg, keypath)
        if on and isinstance(value, str):
            why = _parent_dir_problem(value)
            if why:
                raise ConfigError(f"{origin.get(keypath, path)}: {_dotted(keypath)}: {why}")


def _set(cfg, path, value):
    node = cfg
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value


_TYPE_NAMES = {
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
}


def load(path, name=None, env=None, overrides=None):
    """The validated config at `path`; `name` picks `configs/schemas/<name>.schema.json`
    (default: the kind the config's top-level keys say it is). `overrides` maps dotted
    keys to flag values."""
    path = Path(path)
    env = os.environ if env is None else env
    cfg = _read(path)
    if cfg is None:
        raise ConfigError(f"{path}: empty config file" + (f" (expected {name})" if name else ""))
    if not isinstance(cfg, dict):
        what = _TYPE_NAMES.get(type(cfg), type(cfg).__name__)
        raise ConfigError(f"{path}: top level is {what}, expected a mapping of keys")
    _finite(cfg, str(path))
    if name is None:
        name = detect(cfg, str(path))
    schema = _schema_for(name)
    try:
        _check(cfg, schema, str(path))
    except ConfigError:
        other = _fits(cfg)
        if len(other) == 1 and other[0] != name:
            raise ConfigError(f"{path}: this is a {other[0]} config, not {name}") from None
        raise

    origin = {}  # keypath -> "FILE (with $VAR=value)" for values an override set
    for keypath, var, sub in _annotated(schema, "x-env"):
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        where = f"{path} (with ${var}={raw})"
        value = _env_value(raw, sub)
        _finite(value, where, keypath)
        _set(cfg, keypath, value)
        origin[keypath] = where
        _check(cfg, schema, where)

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        keypath = tuple(dotted.split("."))
        where = f"{path} (with --{keypath[-1].replace('_', '-')}={value})"
        _finite(value, where, keypath)
        _set(cfg, keypath, value)
        origin[keypath] = where
        _check(cfg, schema, where)

    _annotations(cfg, schema, str(path), origin)
    return cfg


def get(cfg, dotted):
    """The value at a dotted key ("exporter.port", "policies.0.id"); KeyError if none."""
    node = cfg
    for k in dotted.split("."):
        if isinstance(node, dict) and k in node:
            node = node[k]
        elif isinstance(node, list) and k.isdigit() and int(k) < len(node):
            node = node[int(k)]
        else:
            raise KeyError(dotted)
    return node


def main(argv=None):
    """`python -m lumen.config get FILE KEY` prints one resolved value (env applied);
    `python -m lumen.config check FILE...` validates configs. FILE may have any name: its
    keys say which kind of config it is. Exit 2 on a bad config, with one line on stderr."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m lumen.config", description=main.__doc__)
    sub = ap.add_subparsers(dest="action", required=True)
    g = sub.add_parser("get")
    g.add_argument("file")
    g.add_argument("key")
    c = sub.add_parser("check")
    c.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    try:
        if a.action == "get":
            print(get(load(a.file), a.key))
        else:
            for f in a.files:
                load(f)
                print(f"[config] {f}: OK")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyError:
        print(f"error: {a.file}: no key {a.key!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
