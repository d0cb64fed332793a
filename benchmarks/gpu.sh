#!/usr/bin/env bash
# Every benchmark at small sizes on a GPU, in a few minutes: bash benchmarks/gpu.sh [cuda|cuda:1|cpu] [python]
#
# Each line is one benchmark's documented command with --device and sizes small enough to finish in
# well under a minute; a benchmark whose script does not take --device yet is reported and skipped.
# Nothing else needs a GPU: with "cpu" as the first argument the same commands run on the CPU.
# Output goes to stdout; each command's wall time is printed after it.
set -u
DEVICE="${1:-cuda}"
PY="${2:-python}"
cd "$(dirname "$0")/.." || exit 1
if [[ "$DEVICE" == cuda* ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to torch; run as: bash benchmarks/gpu.sh cpu" >&2
    exit 1
fi

COMMANDS=(
    "exact_mll.py --sizes 100 1000 4000 --repeats 3"
    "small_n_fit.py --sizes 20 100 --repeats 2 --batch 32"
    "adam_step.py --repeats 5"
    "mauna_loa_fit.py --n 600 --maxiter 200"
    "bo_vs_botorch.py --problems branin hartmann6 --seeds 2 --iters 10"
    "large_n.py --n 20000 --d 8"
    "predict_chunked.py --n 1000 --t 100000"
    "fantasy.py --n 2000 --repeats 2"
    "mixed_precision.py --n 2000"
    "multitask.py --sizes 2000x4"
    "state_key.py --sizes 100 1000"
    "svgp.py --quick"
    "svgp_step.py"
    "deep_gp_step.py"
    "kiss_gp.py --sizes 20000"
    "vnngp.py --n 20000"
    "keops.py --sizes 20000"
)

status=0
for cmd in "${COMMANDS[@]}"; do
    script="benchmarks/${cmd%% *}"
    if [[ ! -f "$script" ]]; then
        echo "=== $cmd: missing, skipped"
        continue
    fi
    if ! grep -q -- '"--device"' "$script"; then
        echo "=== $cmd: takes no --device yet, skipped"
        continue
    fi
    echo "=== python benchmarks/$cmd --device $DEVICE"
    start=$(date +%s)
    # shellcheck disable=SC2086
    if ! "$PY" benchmarks/$cmd --device "$DEVICE"; then
        echo "=== FAILED: $cmd"
        status=1
    fi
    echo "=== $(( $(date +%s) - start )) s"
done
exit $status
