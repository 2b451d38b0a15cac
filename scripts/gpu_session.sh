#!/usr/bin/env bash
# All of a session's GPU work in one prepared call (the device machine is lent for ~15 minutes in
# total, one call at most 10): train the default preset on the GPU, evaluate it, compare it with the
# shipped default, run the GPU tests, and pack everything into $OUT for the session to copy into the repo.
#
#   on the device:  bash scripts/gpu_session.sh [STEPS_SCALE|auto]   (carry: .whl)
#   here (CPU):     OUT=/tmp/gpu-out PYTHON=.venv/bin/python bash scripts/gpu_session.sh --dry-run
#
# --dry-run runs the same steps on the CPU with the smoke preset, to check the script itself.
# Steps, in one deadline (GPU_SESSION_SECONDS, default 570, under the device's 600 s per call: run it
# with timeout_s 600; a stage that would start with too little time left is skipped and says so):
# 0. preflight: the whole pipeline at smoke size on the device (under a minute); a failure ends the
#    call at once, leaving the device time for a fixed retry (PREFLIGHT=0 skips it);
#    measurement (STEPS_SCALE auto only, the default): bench_train.py at the preset's batches, then
#    scripts/plan_scale.py picks the largest scale (at most 8) whose estimated run fits 75% of the time
#    left for training (bench_train's rates read lower than a real run's: a safe side);
# 1. `train all --preset default --set steps_scale=S` (at S = 1 longer than `auto` leaves room for, so
#    retraining the whole default in one call needs `PREFLIGHT=0 TESTS_SECONDS=0 ... gpu_session.sh 1`), packed
#    into results.tar.gz as soon as it ends, so a later stage that overruns loses nothing ($OUT starts
#    empty on each call: a stopped stage does not resume in the next);
#    each run scores itself with its own classifier, whose feature scale differs from run to run, so
#    the new run and the shipped default are also scored on each other's classifier (COMPARE_WITH),
#    and both are ranked against their teachers over 6 blocks of 1000 unseen seeds (bench_quality),
#    then paired with each other block by block (benchmarks/pair_quality.py), and the new HKD's fidelity
#    to its teacher is probed (benchmarks/probe_fidelity.py, beside the shipped HKD's when TEACHER is
#    given); RANK=0 skips 1b;
#    ABLATIONS=a,b,... then runs scripts/ablations.sh on the new run (those variants of its HKD stage,
#    scored on the COMPARE_WITH classifier, each as soon as it is trained) into ablations.txt /
#    ablations.tar.gz (with the variants' weights, to rescore them later);
# 2. the GPU tests (pytest -m gpu), in the TESTS_SECONDS (default 75) kept after training;
# 3. widget latency, when ipywidgets and plotly are importable.
#
# Python packages the device image lacks travel as wheels in .whl/ (git-ignored; see
# docs/development.md): `bash scripts/gpu_wheels.sh` downloads them at this .venv's versions
# (20 MB). h5netcdf is needed; plotly, ipywidgets, anywidget and IPython only for the widget benchmark,
# which is skipped without them.
#
# Out ($OUT, at most 8 files come back): summary.txt (everything printed), results.tar.gz (the run's
# exported checkpoints, evaluation table, logs and stats), bench_train.json (auto scale only),
# compare_*.json (the new run and the shipped default, each scored on the other's classifier),
# quality_{new,shipped}.json (bench_quality, every block),
# ablations.txt and ablations.tar.gz (with ABLATIONS; a stage stopped by the deadline leaves no table,
# but the variants it scored are in the tarball's ablations/eval-*.json).
#
# QUALITY_OPTIONS='--blocks 200 --first-seed 1000120000 --teacher-steps 3' overrides bench_quality's 6 blocks
# of `8,3` (later options win), with QUALITY_SECONDS (default 120) per checkpoint (seconds per block on
# an H200: docs/development.md). bench_quality writes its record after every block, so a run stopped by
# QUALITY_SECONDS keeps the blocks it finished. Seeds from 1,000,120,000 on were never scored (the
# shipped default was decided on blocks up to 1,000,119,999; docs/results.md).
#
# TEACHER=DIR skips the teacher stage and distils that teacher instead (with a STEPS_SCALE number):
#   PREFLIGHT=0 RANK=0 TEACHER=checkpoints/default/teacher ABLATIONS=full,no_tcons,none,bottleneck,full_seed1 \
#       GPU_OVERRIDES='hkd.data_memory_limit_mb=16384 classifier.enabled=false' bash scripts/gpu_session.sh 1
# retrains the shipped default's HKD stage and its Table-3 ablations; five variants do not fit one call
# (`ABLATIONS=full,none` with `TESTS_SECONDS=0 GPU_SESSION_SECONDS=222` does; timings: docs/development.md).
#   PREFLIGHT=0 TESTS_SECONDS=0 TEACHER=checkpoints/default/teacher \
#       GPU_OVERRIDES='hkd.data_memory_limit_mb=16384 classifier.enabled=false trajectories.count=16384' \
#       QUALITY_OPTIONS='--blocks 200 --first-seed 1000036000 --teacher-steps 3' QUALITY_SECONDS=100 \
#       bash scripts/gpu_session.sh 3
# made the shipped default's HKD (the preset's HKD stage as it is now), then scored it and the previous
# HKD over as many blocks of 1,000 fresh seeds as fit 100 s each, in one call (docs/development.md has
# its timings, docs/results.md, "The shipped default checkpoint", the result).
set -uo pipefail

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then
    DRY_RUN=1
    shift
fi
SCALE="${1:-auto}"
FALLBACK_SCALE=1
TESTS_SECONDS="${TESTS_SECONDS:-75}"  # kept after training for the comparison and the GPU tests
TEACHER="${TEACHER:-}"
QUALITY_SECONDS="${QUALITY_SECONDS:-120}"
ABLATIONS="${ABLATIONS:-}"
TEACHER_ARGS=()
if [ -n "$TEACHER" ]; then
    [ "$SCALE" != auto ] || { echo "TEACHER=$TEACHER needs a STEPS_SCALE number (auto measures the teacher too)" >&2; exit 2; }
    [ -e "$TEACHER/model.safetensors" ] || { echo "TEACHER=$TEACHER is not a checkpoint directory" >&2; exit 2; }
    TEACHER_ARGS=(--teacher "$TEACHER")
fi
# Extra --set overrides for the GPU run: a trajectory set of up to ~16 GB (scale 8) stays in memory.
GPU_OVERRIDES="${GPU_OVERRIDES-hkd.data_memory_limit_mb=16384}"
OUT="${OUT:-$PWD/out}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
export PYTHONUNBUFFERED=1
DEADLINE=$((SECONDS + ${GPU_SESSION_SECONDS:-570}))
RESERVE=15  # seconds kept for packing after the last stage

say() { echo "== $(date +%T) $*" | tee -a "$SUMMARY"; }
run() {  # run LIMIT_SECONDS COMMAND...: output to the summary, a stage that fails or overruns is reported
    local limit="$1"
    shift
    local left=$((DEADLINE - SECONDS - RESERVE))
    if [ "$left" -lt 20 ]; then
        say "SKIPPED, ${left} s left of GPU_SESSION_SECONDS: $*"
        return 0
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    timeout "$limit" "$@" 2>&1 | tee -a "$SUMMARY" | tail -n 40
    local status=${PIPESTATUS[0]}
    LAST_STATUS=$status
    if [ "$status" -eq 124 ]; then
        say "STOPPED after its ${limit} s limit: $*"
    elif [ "$status" -ne 0 ]; then
        say "FAILED (exit $status): $*"
    fi
    return 0
}

if ls .whl/*.whl > /dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "could not install the carried wheels" >&2; exit 1; }
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"   # this checkout, not an installed hkdviz

OVERRIDES=()
for assignment in $GPU_OVERRIDES; do OVERRIDES+=(--set "$assignment"); done
if [ "$DRY_RUN" = 1 ]; then
    DEVICE=cpu; PRESET=smoke
    # The GPU overrides are not trained here (smoke sizes instead); check that they resolve.
    "$PYTHON" -m hkdviz.train all --preset default "${OVERRIDES[@]}" --set "steps_scale=${SCALE/auto/$FALLBACK_SCALE}" --out "$OUT/check" \
        --print-config > "$OUT/gpu_config.json" || { echo "GPU_OVERRIDES do not resolve" >&2; exit 1; }
    OVERRIDES=()
else
    DEVICE=cuda; PRESET=default
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { echo "no CUDA device here; use --dry-run on a CPU machine" >&2; exit 1; }
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"
fi
"$PYTHON" -c "import torch, hkdviz; print('torch', torch.__version__, '| hkdviz', hkdviz.__version__, \
'| device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee -a "$SUMMARY"

if [ "$DRY_RUN" = 1 ]; then
    BENCH_ARGS=(--batch 16 --hkd-batch 8 --repeats 2 --trajectory-count 16)
    PLAN_ARGS=(--preset smoke --fixed 5)
    QUALITY_ARGS=(--blocks 2 --num-samples 16 --teacher-steps 3)
    FIDELITY_ARGS=(--num-samples 16 --train-seeds 8 --num-steps 3)
else
    # The preset's batches: the rates depend on them (the tiny network is launch-bound). 4,096
    # trajectories: at bench_train's default 512, start-up dominates (docs/benchmarks.md, "Training").
    # The GPU overrides too: a model override (a wider U-Net) changes the rates the scale is planned from.
    BENCH_ARGS=(--batch 256 --hkd-batch 128 --repeats 5 --trajectory-count 4096 "${OVERRIDES[@]}")
    PLAN_ARGS=(--preset default "${OVERRIDES[@]}" --fixed 60 --maximum 8)
    QUALITY_ARGS=(--blocks 6 --num-samples 1000 --teacher-steps 8,3)
    FIDELITY_ARGS=()
fi
read -r -a QUALITY_EXTRA <<< "${QUALITY_OPTIONS:-}"  # e.g. more blocks on fresh seeds (later options win)
QUALITY_ARGS+=("${QUALITY_EXTRA[@]}")
# Fail fast: the whole pipeline at smoke size first (under a minute), so that a CUDA-only bug ends the call
# before the long run spends the device time (the session can then fix it and call again).
# PREFLIGHT=0 skips it (a retry on a device where it already passed).
if [ "${PREFLIGHT:-1}" = 1 ]; then
    say "0. preflight: train all --preset smoke on $DEVICE"
    run 120 "$PYTHON" -m hkdviz.train all --preset smoke --device "$DEVICE" --out "$OUT/preflight" --no-progress
    [ "$LAST_STATUS" -eq 0 ] || { say "preflight failed: stopping here"; exit 1; }
    rm -rf "$OUT/preflight"
fi
if [ "$SCALE" = auto ]; then
    say "0. training throughput at the run's batches (bench_train)"
    run 90 "$PYTHON" benchmarks/bench_train.py --device "$DEVICE" "${BENCH_ARGS[@]}" --json "$OUT/bench_train.json"
    [ "$LAST_STATUS" -eq 0 ] || { say "bench_train failed: stopping here"; exit 1; }
fi
# Time left for training: the deadline, less the packing reserve and the tests kept after it.
TRAIN_SECONDS=$((DEADLINE - SECONDS - RESERVE - TESTS_SECONDS))
if [ "$SCALE" = auto ]; then
    SCALE=$("$PYTHON" scripts/plan_scale.py --bench "$OUT/bench_train.json" \
        --seconds $((TRAIN_SECONDS * 3 / 4)) "${PLAN_ARGS[@]}" 2> >(tee -a "$SUMMARY" >&2)) \
        || { SCALE=$FALLBACK_SCALE; say "could not plan the scale; falling back to $SCALE"; }
fi

say "1. train all --preset $PRESET ${OVERRIDES[*]} --set steps_scale=$SCALE on $DEVICE (limit ${TRAIN_SECONDS} s)"
run "$TRAIN_SECONDS" "$PYTHON" -m hkdviz.train all --preset "$PRESET" "${OVERRIDES[@]}" --set "steps_scale=$SCALE" \
    "${TEACHER_ARGS[@]}" --device "$DEVICE" --out "$OUT/run" --no-progress
grep -h "images/s\|samples/s\|wrote\|generated" "$OUT"/run/*/log.txt 2>/dev/null | tail -n 12 | tee -a "$SUMMARY"
cat "$OUT/run/evaluation/table.txt" 2>/dev/null | tee -a "$SUMMARY"
# Pack now: the later stages may overrun, and the trained checkpoints are what this call is for.
tar czf "$OUT/results.tar.gz" -C "$OUT" --exclude='run/trajectories/*.nc' --exclude='*/resume.pt' \
    --exclude='run/*/checkpoint' run 2> /dev/null
ls -la "$OUT/results.tar.gz" | tee -a "$SUMMARY"

# Each run scores itself with its own classifier, whose feature scale differs from run to run: compare
# with the shipped checkpoint on both yardsticks (COMPARE_WITH="" skips this).
COMPARE_WITH="${COMPARE_WITH-default}"
if [ -n "$COMPARE_WITH" ] && [ "${RANK:-1}" = 1 ] && [ -d "$OUT/run/export/hkd" ]; then  # RANK=0 skips it
    say "1b. the new run on $COMPARE_WITH's classifier, and $COMPARE_WITH on the new run's classifier"
    run 60 "$PYTHON" -m hkdviz eval "$OUT/run/export/hkd" --teacher "$OUT/run/export/teacher" \
        --classifier "$COMPARE_WITH" --device "$DEVICE" --json "$OUT/compare_new_on_shipped_classifier.json"
    if [ -d "$OUT/run/export/classifier" ]; then  # none with GPU_OVERRIDES classifier.enabled=false
        run 60 "$PYTHON" -m hkdviz eval "$COMPARE_WITH" --classifier "$OUT/run/export/classifier" \
            --device "$DEVICE" --json "$OUT/compare_shipped_on_new_classifier.json"
    fi
    # One 1000-seed eval cannot rank HKD against the 5-NFE teacher (their KIDs differ by less than its
    # spread): score both checkpoints over disjoint blocks of unseen seeds, with paired differences. The
    # tables go to summary.txt, every block to quality_{new,shipped}.json: the two runs share seeds and
    # reference block by block, so new HKD - shipped HKD can be paired afterwards.
    say "1b. HKD against its teacher over seed blocks (bench_quality), new run then $COMPARE_WITH, on $COMPARE_WITH's classifier"
    run "$QUALITY_SECONDS" "$PYTHON" benchmarks/bench_quality.py --checkpoint "$OUT/run/export/hkd" --teacher "$OUT/run/export/teacher" \
        --classifier "$COMPARE_WITH" --device "$DEVICE" "${QUALITY_ARGS[@]}" --json "$OUT/quality_new.json"
    run "$QUALITY_SECONDS" "$PYTHON" benchmarks/bench_quality.py --checkpoint "$COMPARE_WITH" --classifier "$COMPARE_WITH" \
        --device "$DEVICE" "${QUALITY_ARGS[@]}" --json "$OUT/quality_shipped.json"
    [ -f "$OUT/quality_new.json" ] && [ -f "$OUT/quality_shipped.json" ] \
        && run 20 "$PYTHON" benchmarks/pair_quality.py "$OUT/quality_new.json" "$OUT/quality_shipped.json"
    # How closely the new HKD follows its teacher (seed by seed, class by class; into summary.txt). With
    # TEACHER given, the shipped HKD was distilled from the same teacher: probe it beside the new one.
    fidelity_args=(--checkpoint "$OUT/run/export/hkd" --teacher "$OUT/run/export/teacher" --classifier "$COMPARE_WITH")
    [ -n "$TEACHER" ] && fidelity_args+=(--checkpoint "$COMPARE_WITH")
    run 60 "$PYTHON" benchmarks/probe_fidelity.py "${fidelity_args[@]}" --device "$DEVICE" "${FIDELITY_ARGS[@]}"
fi
if [ -n "$ABLATIONS" ] && [ -d "$OUT/run/hkd/checkpoint" ]; then
    yardstick="${COMPARE_WITH:-the new run}"
    say "1c. ablations $ABLATIONS on the new run's teacher and trajectories, scored on the classifier of $yardstick"
    ablation_args=(--variants "$ABLATIONS" --threads 4 --teacher "${TEACHER:-$OUT/run/teacher/checkpoint}")
    [ -n "$COMPARE_WITH" ] && ablation_args+=(--classifier "$COMPARE_WITH")
    PYTHON="$PYTHON" run $((DEADLINE - SECONDS - RESERVE)) bash scripts/ablations.sh "$OUT/run" "${ablation_args[@]}" \
        -- --device "$DEVICE" --set "steps_scale=$SCALE" "${OVERRIDES[@]}"
    tar czf "$OUT/ablations.tar.gz" -C "$OUT/run" --exclude='*/resume.pt' \
        ablations 2> /dev/null
    cp "$OUT/run/ablations/table.txt" "$OUT/ablations.txt" 2> /dev/null
fi

say "2. GPU tests"
run 90 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests

say "3. widget latency (bench_widgets)"
if "$PYTHON" -c "import ipywidgets, plotly" 2> /dev/null; then
    checkpoint="$OUT/run/export/hkd"
    [ -d "$checkpoint" ] || checkpoint=default
    run 90 "$PYTHON" benchmarks/bench_widgets.py --checkpoint "$checkpoint" --device "$DEVICE" --updates 10
else
    say "skipped: ipywidgets/plotly not importable (carry their wheels in .whl to measure it)"
fi

say "4. tidy"
rm -rf "$OUT/run" "$OUT/check"  # packed above; left in place it would not come back (too deep, too many files)
ls -la "$OUT" | tee -a "$SUMMARY"
say "done in ${SECONDS} s"
