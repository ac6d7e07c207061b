"""The schemas' enums are named once, in lumen/vocab.py, and read from the schemas."""

import ast
import json
from pathlib import Path

from lumen import vocab

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("lumen", "rmb", "exporters", "safety", "ure", "api", "tools", "bench")


def schema_enums():
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("enum"), list):
                found.update(v for v in node["enum"] if isinstance(v, str))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for p in (ROOT / "schemas").glob("*.json"):
        walk(json.loads(p.read_text()))
    return found


def literals(path):
    """Every str constant of a module, except docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    return [
        (n.lineno, n.value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
    ]


def test_vocab_reads_every_enum_of_the_schemas():
    named = {v for k, v in vars(vocab).items() if k.isupper() and isinstance(v, tuple) for v in v}
    assert schema_enums() <= named


def test_levels_have_one_encoding_ordered_by_severity():
    assert sorted(vocab.SEVERITY, key=vocab.SEVERITY.get) == [
        vocab.UNDEFINED,
        *vocab.DEFINED_LEVELS,
    ]
    assert set(vocab.SEVERITY) == set(vocab.LEVELS)


def test_no_module_repeats_an_enum_literal():
    # Three members are also ordinary names: "log" and "metrics" (Safety Music input
    # sources; a file suffix, a URL path, config keys) and "safety_music" (a group; also the
    # Safety Music process's name). The distinctive members are checked everywhere.
    enums = schema_enums() - {"log", "metrics", "safety_music"}
    offenders = []
    for d in CODE_DIRS:
        for p in sorted((ROOT / d).rglob("*.py")):
            if p == ROOT / "lumen" / "vocab.py":
                continue
            offenders += [
                f"{p.relative_to(ROOT)}:{ln}: {v!r}" for ln, v in literals(p) if v in enums
            ]
    assert not offenders, "enum literals outside lumen/vocab.py:\n" + "\n".join(offenders)
