#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (the README's test command).
# Installs Debian's Chromium for the report's browser test when it is missing and we
# are root, creates .venv, installs compaudit with its dev extra, runs ruff and mypy, and
# runs pytest (the docstring examples of the package, then the test suite).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "scripts/test.sh: chromium is missing; install it (apt-get install chromium) for the report test" >&2
  fi
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
# Lint first (pyflakes, isort, pyupgrade, public docstrings; configured in pyproject.toml).
.venv/bin/ruff check compaudit tests benchmarks examples
# Types: the package, strictly for schema, config, analysis/ and gate/ (pyproject.toml).
.venv/bin/mypy
# The docstring examples run too (usage examples that need data on disk are plain text).
.venv/bin/python -m pytest -q -p no:cacheprovider --doctest-modules compaudit
.venv/bin/python -m pytest "$@"
