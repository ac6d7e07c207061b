"""The shape of the code: thin entry points over one core, and no copied blocks.

- Every entry point (a script under rmb/, exporters/, safety/, ure/, api/, tools/, bench/)
  is a thin `main(argv) -> int` of at most ~80 lines; the logic lives in lumen/.
- No class defined in an entry point is imported anywhere else (the core is importable
  without going through a script).
- No two modules share a block of six or more lines of code (docstrings, imports,
  comments and blank lines aside).
"""

import ast
import hashlib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENTRY_DIRS = ("rmb", "exporters", "safety", "ure", "api", "tools", "bench")
CODE_DIRS = ("lumen",) + ENTRY_DIRS
MAX_ENTRY_LINES = 80
BLOCK = 6


def modules(dirs):
    for d in dirs:
        for p in sorted((ROOT / d).rglob("*.py")):
            if p.name != "__init__.py" and ".venv" not in p.parts:
                yield p


def rel(p):
    return str(p.relative_to(ROOT))


def module_name(p):
    return ".".join(p.relative_to(ROOT).with_suffix("").parts)


def test_entry_points_are_thin():
    fat = [
        f"{rel(p)}: {n} lines"
        for p in modules(ENTRY_DIRS)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_ENTRY_LINES
    ]
    assert not fat, f"entry points over {MAX_ENTRY_LINES} lines:\n" + "\n".join(fat)


def test_entry_points_main_returns_an_exit_code():
    for p in modules(ENTRY_DIRS):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert mains, f"{rel(p)}: no main()"
        assert mains[0].args.args and mains[0].args.args[0].arg == "argv", rel(p)


def test_no_class_of_an_entry_point_is_imported_elsewhere():
    classes = {}
    for p in modules(ENTRY_DIRS):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for n in tree.body:
            if isinstance(n, ast.ClassDef):
                classes[(module_name(p), n.name)] = rel(p)
    users = []
    for p in modules(CODE_DIRS + ("tests",)):
        for n in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(n, ast.ImportFrom) and n.module:
                users += [
                    f"{rel(p)} imports {a.name} from {classes[(n.module, a.name)]}"
                    for a in n.names
                    if (n.module, a.name) in classes
                ]
    assert not users, "\n".join(users)


def code_lines(p):
    """(line number, stripped text) of the lines that are code: no docstrings, imports,
    comments, blank lines or lone brackets."""
    text = p.read_text(encoding="utf-8")
    skip = set()
    for n in ast.walk(ast.parse(text)):
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = n.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                skip.update(range(body[0].lineno, body[0].end_lineno + 1))
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            skip.update(range(n.lineno, n.end_lineno + 1))
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if i in skip or not s or s.startswith("#") or s in {")", "]", "}", "),", "],", "},"}:
            continue
        out.append((i, s))
    return out


def test_no_two_modules_share_a_block_of_six_lines():
    seen = defaultdict(set)  # hash of 6 code lines -> {(file, first line)}
    for p in modules(CODE_DIRS):
        lines = code_lines(p)
        for k in range(len(lines) - BLOCK + 1):
            block = "\n".join(s for _, s in lines[k : k + BLOCK])
            seen[hashlib.sha1(block.encode()).digest()].add((rel(p), lines[k][0]))
    first = {}  # (file, file) -> the first lines of their first shared block
    for places in seen.values():
        by_file = {}
        for f, ln in sorted(places):
            by_file.setdefault(f, ln)
        files = sorted(by_file)
        for i, a in enumerate(files):
            for b in files[i + 1 :]:
                here = (by_file[a], by_file[b])
                first[(a, b)] = min(first.get((a, b), here), here)
    shared = [f"{a}:{la} ~ {b}:{lb}" for (a, b), (la, lb) in sorted(first.items())]
    assert not shared, "blocks of 6+ lines in more than one module:\n" + "\n".join(shared)
