#!/usr/bin/env bash
# Install everything the test suite needs, check the code, and run the tests.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -m "not e2e" -x --no-cov   # extra arguments go to pytest
# pytest measures line and branch coverage of ccx_asgi (in this process; the CLI's subprocesses are
# not counted) and fails under COVERAGE_FLOOR, a little below the figure last measured (93.86%);
# a partial run falls under it, so add --no-cov to one.
# Installs: a venv in .venv with ccx-asgi[test]; redis-server (Debian package, when running as
# root and it is missing); the Codex CLI from npm into .cache/codex (for the end-to-end tests).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2> >(grep -v '^WARNING: Location' >&2)

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian package)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "warning: redis-server is not installed; the Redis tests will be skipped (apt-get install redis-server)" >&2
  fi
fi

codex=.cache/codex/node_modules/.bin/codex
if [ ! -x "$codex" ] || ! "$codex" --version 2>/dev/null | grep -qF "0.171.0"; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing the Codex CLI from npm (for the end-to-end tests)"
    npm install --silent --prefix .cache/codex --no-audit --no-fund @openai/codex@0.171.0 >/dev/null
  else
    echo "warning: npm is missing; the Codex end-to-end tests will be skipped" >&2
  fi
fi

echo "ruff check"; .venv/bin/ruff check .
echo "ruff format --check"; .venv/bin/ruff format --check .
echo "mypy --strict"; .venv/bin/mypy
COVERAGE_FLOOR=93
set +e
.venv/bin/pytest --cov=ccx_asgi --cov-branch --cov-report=term-missing:skip-covered --cov-fail-under="$COVERAGE_FLOOR" "$@"
status=$?
set -e
# pytest exits 5 when no test ran: that is a failure for us, not a pass.
[ "$status" = 5 ] && { echo "no tests ran" >&2; exit 1; }
exit "$status"
