#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The real-browser test drives Debian's Chromium; install it when we can (root + apt), else it skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) \
        || echo "note: could not install chromium; the browser test will skip"
fi
exec .venv/bin/python -m pytest "$@"
