#!/usr/bin/env bash
# Download the wheels scripts/gpu_session.sh carries to the lent GPU machine (see
# docs/development.md, "GPU runs"): its image has torch, xarray and h5py, but not h5netcdf (needed for the
# trajectory files) nor the widget stack (plotly, ipywidgets, anywidget and what they import), without
# which the widget-latency stage is skipped. Versions are those of this checkout's .venv, so the device
# runs what the tests here ran; the device's Python is 3.12.
#
#   bash scripts/gpu_wheels.sh [DIR]     (DIR defaults to .whl, git-ignored through .git/info/exclude)
#
# Then every device call names DIR in `carry`; gpu_session.sh installs whatever wheels it finds there.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${1:-.whl}"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || { echo "no $PYTHON: run scripts/setup.sh first (the versions come from it)" >&2; exit 1; }
# The device image lacks these; it has jinja2, pygments, psutil, typing_extensions.
PACKAGES=(h5netcdf plotly narwhals ipywidgets comm traitlets widgetsnbextension jupyterlab_widgets anywidget
          psygnal ipython ipython_pygments_lexers jedi parso matplotlib-inline pexpect ptyprocess
          prompt_toolkit wcwidth stack-data asttokens executing pure_eval)
freeze=$("$PYTHON" -m pip list --format=freeze 2>/dev/null | tr '[:upper:]' '[:lower:]' | tr '_' '-')
pins=()
for package in "${PACKAGES[@]}"; do
    name=$(echo "$package" | tr '[:upper:]' '[:lower:]' | tr '_' '-')
    pin=$(echo "$freeze" | grep -E "^${name}==" || true)
    [ -n "$pin" ] || { echo "$package is not installed in $PYTHON: cannot pin it" >&2; exit 1; }
    pins+=("$pin")
done
mkdir -p "$DIR"
case "$DIR" in  # inside the checkout: keep it out of git (the device tool copies untracked, unignored files)
    /*) ;;
    *) mkdir -p .git/info; grep -qx "/$DIR/" .git/info/exclude 2> /dev/null || echo "/$DIR/" >> .git/info/exclude ;;
esac
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DIR" "${pins[@]}"
ls "$DIR"/*.whl | wc -l | xargs echo "wheels in $DIR:"
du -sh "$DIR"
