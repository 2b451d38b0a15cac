#!/usr/bin/env bash
# Set up, lint (ruff) and run the test suite. Extra arguments go to pytest.
#   bash scripts/test.sh            every test: what CI runs (.ci/run)
#   bash scripts/test.sh --quick    leaves out the tests marked slow or browser (docs/testing.md)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=false
pytest_arguments=()
for argument in "$@"; do
    if [ "$argument" = "--quick" ]; then
        quick=true
    else
        pytest_arguments+=("$argument")
    fi
done
bash scripts/setup.sh
.venv/bin/python -m ruff check .
if [ "$quick" = true ]; then
    exec .venv/bin/python -m pytest -m "not slow and not browser" ${pytest_arguments[@]+"${pytest_arguments[@]}"}
fi
# The real-browser test drives Debian's Chromium; install it when we can (root + apt), else it skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
        || echo "note: could not install chromium; the browser test will skip"
fi
exec .venv/bin/python -m pytest ${pytest_arguments[@]+"${pytest_arguments[@]}"}
