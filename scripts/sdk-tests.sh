#!/usr/bin/env bash
# Official-SDK conformance suite: runs tests/sdk (pytest + the `anthropic`
# Python SDK, strict response validation) against a freshly built
# `target/debug/logbook`. Every requirement is installed or fails loudly;
# nothing is skipped.
#
#   scripts/sdk-tests.sh [extra pytest args...]
#   LOGBOOK_BIN=/path/to/logbook scripts/sdk-tests.sh   # test another binary
set -euo pipefail
cd "$(dirname "$0")/.."

ANTHROPIC_VERSION="2.14.0"
PYTEST_VERSION="9.2.0"
VENV=".venv"
PY="$VENV/bin/python"

step() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'sdk-tests: %s\n' "$*" >&2; exit 1; }

step "python environment ($VENV)"
command -v python3 >/dev/null 2>&1 || die "python3 is not installed; install Python 3.9+"
if [[ ! -x "$PY" ]]; then
    python3 -m venv "$VENV" || die "could not create $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
fi
if ! "$PY" - "$ANTHROPIC_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys
import anthropic, pytest  # noqa: F401
sys.exit(0 if anthropic.__version__ == sys.argv[1] else 1)
PYEOF
then
    "$PY" -m pip install --disable-pip-version-check --quiet \
        "anthropic==$ANTHROPIC_VERSION" "pytest==$PYTEST_VERSION" \
        || die "could not install anthropic==$ANTHROPIC_VERSION and pytest==$PYTEST_VERSION into $VENV"
fi
"$PY" - "$ANTHROPIC_VERSION" <<'PYEOF' || die "the SDK in $VENV is not anthropic==$ANTHROPIC_VERSION"
import sys
import anthropic, pytest
if anthropic.__version__ != sys.argv[1]:
    sys.exit(f"anthropic {anthropic.__version__} is installed, expected {sys.argv[1]}")
print(f"anthropic {anthropic.__version__}, pytest {pytest.__version__}", file=sys.stderr)
PYEOF

step "build"
# The same command as test.sh's build step, so that inside it this is a
# no-op: building one package resolves other dependency features and
# rebuilt the server and its dependencies (4-7 minutes of a CI run).
cargo build --workspace --all-targets --locked

BIN="${LOGBOOK_BIN:-target/debug/logbook}"
[[ -x "$BIN" ]] || die "no executable server binary at $BIN"

step "SDK conformance tests (server: $BIN)"
export PYTHONDONTWRITEBYTECODE=1
exec "$PY" -m pytest tests/sdk -q "$@"
