#!/usr/bin/env bash
# Set up ./.venv with hkdviz and everything its notebooks, training and tests need.
# Idempotent: a second run only checks. CPU machines get the pinned CPU torch wheel;
# set HKDVIZ_TORCH=skip to keep a torch you installed yourself (e.g. a CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${HKDVIZ_TORCH:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.hkdviz-installed
want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if [ "$TORCH_SPEC" != "skip" ]; then
        .venv/bin/pip install --quiet --disable-pip-version-check "$TORCH_SPEC"
    fi
    .venv/bin/pip install --quiet --disable-pip-version-check -e ".[all]"
    echo "$want" > "$stamp"
fi
# Jupyter kernels started by notebooks and tests must be this venv's Python.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
echo "hkdviz environment ready: $(.venv/bin/python -c 'import hkdviz, torch; print("hkdviz", hkdviz.__version__, "torch", torch.__version__)')"
