#!/usr/bin/env bash
# The paper's Table-3 ablations on one teacher and one trajectory set: train the HKD stage once per
# variant with the same preset budget, score each with `hkdviz eval --teacher none` on the same seeds
# as soon as it is trained (RUN_DIR/ablations/eval-<variant>.json), and print one table (also written
# to RUN_DIR/ablations/table.txt).
#
#   bash scripts/ablations.sh RUN_DIR [--preset NAME] [--threads 2] [--variants a,b,...]
#                             [--teacher DIR] [--classifier NAME_OR_DIR] [-- extra train arguments]
#
# --preset defaults to the one RUN_DIR was trained with (its config.json), else default; --teacher
# to RUN_DIR/teacher/checkpoint (give it for a run trained with `train all --teacher`); --classifier
# (the yardstick) to RUN_DIR's own.
# RUN_DIR is a finished `hkdviz train all` directory (it needs teacher/checkpoint, trajectories/ and
# classifier/ or export/classifier); the variants go to RUN_DIR/ablations/<variant>. A variant whose
# checkpoint exists is not trained again, so a killed run continues where it stopped. "full" is
# RUN_DIR's own HKD run (RUN_DIR/hkd) when it has one, since that is the preset trained as it is.
#   full        the preset as it is
#   full_seed1  the same with training seed 1: the run-to-run spread to read the others against
#   bottleneck  Koopman evolution at the bottleneck only (non-hierarchical)
#   no_tcons    no trajectory-consistency term (reconstruction from x_T only)
#   none        no Koopman evolution (identity at every level), t-consistency kept (not a row of the paper)
#   paper_none  the paper's Table-3 row 1: no Koopman evolution AND no t-consistency (direct distillation)
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//'  # this header
    if [ $# -lt 1 ]; then exit 2; else exit 0; fi  # no RUN_DIR: a usage error; --help: not one
fi
RUN="$1"
shift
PRESET=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("preset") or "default")' \
    "$RUN/config.json" 2> /dev/null || echo default)
THREADS=2
VARIANTS=(full full_seed1 bottleneck no_tcons none)
TEACHER="$RUN/teacher/checkpoint"
CLASSIFIER=""
while [ $# -gt 0 ]; do
    case "$1" in
        --preset) PRESET="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --variants) IFS=, read -r -a VARIANTS <<< "$2"; shift 2 ;;
        --teacher) TEACHER="$2"; shift 2 ;;
        --classifier) CLASSIFIER="$2"; shift 2 ;;
        --) shift; break ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
EXTRA=("$@")

HERE="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$HERE/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
for needed in "$TEACHER" "$RUN/trajectories"; do
    [ -e "$needed" ] || { echo "$needed is missing: RUN_DIR must be a finished 'hkdviz train all' run" >&2; exit 1; }
done
if [ -z "$CLASSIFIER" ]; then
    CLASSIFIER="$RUN/classifier"
    [ -e "$CLASSIFIER/model.safetensors" ] || CLASSIFIER="$RUN/export/classifier"
    [ -e "$CLASSIFIER/model.safetensors" ] || { echo "no classifier in $RUN (classifier/ or export/classifier/)" >&2; exit 1; }
fi

OUT="$RUN/ablations"
mkdir -p "$OUT"
declare -A SETTINGS=(
    [full]=""
    [full_seed1]="seed=1"
    [bottleneck]="hkd.koopman.levels=bottleneck"
    [no_tcons]="hkd.t_consistency=false"
    [none]="hkd.koopman.levels=none"
    [paper_none]="hkd.koopman.levels=none hkd.t_consistency=false"
)
for variant in "${VARIANTS[@]}"; do
    [ -n "${SETTINGS[$variant]+set}" ] || { echo "unknown variant: $variant (known: ${!SETTINGS[*]})" >&2; exit 2; }
done

checkpoint_of() {
    if [ "$1" = full ] && [ ! -e "$OUT/full/checkpoint/model.safetensors" ] && [ -e "$RUN/hkd/checkpoint/model.safetensors" ]; then
        echo "$RUN/hkd/checkpoint"
    else
        echo "$OUT/$1/checkpoint"
    fi
}

for variant in "${VARIANTS[@]}"; do
    if [ -e "$(checkpoint_of "$variant")/model.safetensors" ]; then
        echo "== $variant: trained already"
    else
        echo "== $(date +%T) train $variant"
        sets=()
        for setting in ${SETTINGS[$variant]}; do sets+=(--set "$setting"); done
        "$PYTHON" -m hkdviz.train hkd --preset "$PRESET" "${sets[@]}" --out "$OUT/$variant" \
            --teacher "$TEACHER" --trajectories "$RUN/trajectories" --threads "$THREADS" \
            --no-progress "${EXTRA[@]}" > "$OUT/$variant.log" 2>&1 \
            || { echo "training $variant failed; see $OUT/$variant.log" >&2; exit 1; }
    fi
    # Scored as soon as it is trained: a run stopped part-way keeps the variants it finished.
    [ -e "$OUT/eval-$variant.json" ] && continue
    echo "== $(date +%T) eval $variant"
    "$PYTHON" -m hkdviz.cli eval "$(checkpoint_of "$variant")" --teacher none --classifier "$CLASSIFIER" \
        --json "$OUT/eval-$variant.json" --quiet > "$OUT/eval-$variant.txt" 2>&1 \
        || { echo "evaluating $variant failed; see $OUT/eval-$variant.txt" >&2; exit 1; }
done

"$PYTHON" - "$OUT" "${VARIANTS[@]}" <<'EOF' | tee "$OUT/table.txt"
import json
import sys
from pathlib import Path

out, variants = Path(sys.argv[1]), sys.argv[2:]
print(f"\n{'variant':<12} {'local KID x1e3':>18} {'local FD':>9} {'SWD':>8}")
for variant in variants:
    rows = json.loads((out / f"eval-{variant}.json").read_text())["rows"]
    row = next(row for row in rows if row["method"].startswith("HKD"))
    kid = f"{row['kid_x1e3']:.0f} +- {row['kid_std_x1e3']:.0f}"
    print(f"{variant:<12} {kid:>18} {row['local_fd']:>9.2f} {row['swd']:>8.4f}")
EOF
