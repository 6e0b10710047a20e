#!/usr/bin/env bash
# Runs the Python SDK's tests (agent/python/tests: unit, then end to end against the real
# `profwatch server` and `profwatch agent`) in a virtualenv of their own.
#
#   agent/python/tests/run.sh [pytest args]
#
# PROFWATCH_BIN: the profwatch binary (default: $CARGO_TARGET_DIR/debug/profwatch, else
# target/debug/profwatch; build it with `cargo build -p profwatch`). The venv lives in
# $PROFWATCH_PY_VENV (default: <target dir>/python-venv) and is reused between runs; PyPI is
# needed the first time only. PYTHON picks the interpreter (default python3, 3.9 or newer).
# Exits non-zero if a test fails or if no test ran at all (pytest's exit status 5).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pkg="$(dirname "$here")"
root="$(cd "$pkg/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
export PROFWATCH_BIN="${PROFWATCH_BIN:-$target/debug/profwatch}"
venv="${PROFWATCH_PY_VENV:-$target/python-venv}"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
# The package itself, rebuilt from the tree (its build backend needs nothing from the network).
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$pkg"

cd "$here"
export PYTHONDONTWRITEBYTECODE=1
status=0
if [ "$#" -eq 0 ]; then
    set -- unit e2e  # the cheap tests first
fi
"$venv/bin/python" -m pytest -p no:cacheprovider -rs "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "agent/python/tests/run.sh: no tests ran; that is a failure" >&2
    exit 1
fi
exit "$status"
