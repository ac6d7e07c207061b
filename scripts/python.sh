# Sourced by the scripts that run Python (not run on its own): sets ROOT (this checkout)
# and PY (its .venv's Python) and checks that PY can run Lumen. Without .venv, or with one
# that lacks Lumen or a dependency, the script ends here: one line on stderr (lumen's own
# check names the missing module) saying to run `make venv`, exit status 2.
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
PY=$ROOT/.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "error: no Python environment at $ROOT/.venv: run make venv (or pip install .)" >&2
  exit 2
fi
"$PY" -c 'import sys; sys.path.append(sys.argv[1]); import lumen' "$ROOT" || exit 2
