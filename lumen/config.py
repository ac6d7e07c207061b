"""YAML configs validated against their JSON Schema, with env and flag overrides (DESIGN.md section 4).

Precedence, lowest first: the YAML file, environment variables, command-line flags.
A config schema names the variable that overrides a key with `"x-env": "NAME"` next to
that key, so the mapping is data in `configs/schemas/`, not code. Env values are read as
YAML scalars ("0.8" is a number, "[RISK]" a list) and the result is validated again.

A bad config raises ConfigError with one line: file, key path, what was expected.
Entry points turn it into that line on stderr and exit status 2.
"""
import json
import os
from pathlib import Path

import jsonschema
import yaml

from . import CONFIGS


class ConfigError(Exception):
    pass


def _schema_for(name):
    p = CONFIGS / "schemas" / f"{name}.schema.json"
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def env_keys(schema, prefix=()):
    """[(("exporter", "port"), "RMB_EXPORTER_PORT"), ...] for every x-env in a schema."""
    out = []
    if "x-env" in schema:
        out.append((prefix, schema["x-env"]))
    for key, sub in schema.get("properties", {}).items():
        out.extend(env_keys(sub, prefix + (key,)))
    return out


def _set(cfg, path, value):
    node = cfg
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value


def _check(cfg, schema, where):
    v = jsonschema.Draft7Validator(schema)
    err = jsonschema.exceptions.best_match(v.iter_errors(cfg))
    if err is not None:
        keypath = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{where}: {keypath}: {err.message}")


def load(path, name=None, env=None, overrides=None):
    """The validated config at `path`; `name` picks `configs/schemas/<name>.schema.json`
    (default: the file's stem). `overrides` maps dotted keys to flag values."""
    path = Path(path)
    name = name or path.stem
    env = os.environ if env is None else env
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}") from None
    if cfg is None:
        cfg = {}
    schema = _schema_for(name)
    _check(cfg, schema, str(path))

    for keypath, var in env_keys(schema):
        if var in env and env[var] != "":
            try:
                value = yaml.safe_load(env[var])
            except yaml.YAMLError:
                value = env[var]
            _set(cfg, keypath, value)
            _check(cfg, schema, f"{path} (with ${var}={env[var]})")

    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        _set(cfg, tuple(dotted.split(".")), value)
        _check(cfg, schema, f"{path} (with --{dotted.split('.')[-1].replace('_', '-')}={value})")
    return cfg


def get(cfg, dotted):
    node = cfg
    for k in dotted.split("."):
        node = node[k]
    return node


def main(argv=None):
    """`python -m lumen.config get FILE KEY` prints one resolved value (env applied);
    `python -m lumen.config check FILE...` validates configs. Exit 2 on a bad config."""
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
    except KeyError as e:
        print(f"error: {a.file}: no key {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
