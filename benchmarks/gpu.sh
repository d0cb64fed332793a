#!/usr/bin/env bash
# Every benchmark at small sizes on one device: bash benchmarks/gpu.sh [cuda|cpu] [python]
#
# Each entry below is one benchmark's documented command in two sizes: "full" (a few seconds to about a minute
# each on a GPU; the default with cuda) and "quick" (tiny, so that the whole list finishes in a few minutes on a
# small CPU; the default with cpu). SIZES=full or SIZES=quick in the environment chooses explicitly. Every
# script takes --device and --threads (THREADS in the environment, default 1). Nothing else needs a GPU.
# Output goes to stdout; each command's wall time is printed after it, the total at the end.
set -u
DEVICE="${1:-cuda}"
PY="${2:-python}"
THREADS="${THREADS:-1}"
if [[ "$DEVICE" == cuda* ]]; then SIZES="${SIZES:-full}"; else SIZES="${SIZES:-quick}"; fi
if [[ "$SIZES" != full && "$SIZES" != quick ]]; then
    echo "SIZES must be full or quick; got $SIZES" >&2
    exit 2
fi
cd "$(dirname "$0")/.." || exit 1
if [[ "$DEVICE" == cuda* ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device visible to torch; run as: bash benchmarks/gpu.sh cpu" >&2
    exit 1
fi

# script | full sizes (GPU) | quick sizes (CPU)
COMMANDS=(
    "exact_mll.py|--sizes 100 1000 4000 --repeats 3|--sizes 100 300 --repeats 1 --dtypes float64 --no-extras"
    "small_n_fit.py|--sizes 20 100 --repeats 2 --batch 32|--sizes 20 --repeats 1 --batch 2 --d 2"
    "adam_step.py|--repeats 5|--repeats 2"
    "mauna_loa_fit.py|--n 600 --maxiter 200|--n 150 --maxiter 10 --eval-repeats 1"
    "bo_vs_botorch.py|--problems branin hartmann6 --seeds 2 --iters 10|--problems branin --seeds 1 --iters 2 --restarts 1 --raw-samples 16"
    "large_n.py|--n 20000 --d 8|--n 2000 --d 4"
    "kernel_tiles.py|--n 20000|--n 2000 --repeats 1"
    "predict_chunked.py|--n 1000 --t 100000|--n 200 --t 5000"
    "fantasy.py|--n 2000 --repeats 2|--n 300 --repeats 1"
    "mixed_precision.py|--n 2000|--n 300 --repeats 1"
    "multitask.py|--sizes 2000x4|--sizes 200x2 --repeats 1"
    "batch_independent.py|--sizes 500x4 2000x4|--sizes 100x2 --repeats 1"
    "state_key.py|--sizes 100 1000|--sizes 100 500 --repeats 3"
    "svgp.py|--quick|--n 4096 --ms 32 --epochs 1"
    "svgp_step.py||--m 32 --n 2048 --repeats 2"
    "deep_gp_step.py||--n 512 --batch 64 --m 16 --samples 2 --repeats 2"
    "kiss_gp.py|--sizes 20000|--sizes 2000 --grid 400"
    "vnngp.py|--n 20000|--n 2000"
    "keops.py|--sizes 20000|--sizes 2000"
    "distributed.py|exact --num-data 20000|exact --num-data 1000"
    "distributed.py|svgp --num-data 200000|svgp --num-data 4096"
)

status=0
failed=()
total_start=$(date +%s)
for entry in "${COMMANDS[@]}"; do
    IFS='|' read -r script full quick <<< "$entry"
    if [[ "$SIZES" == full ]]; then sizes="$full"; else sizes="$quick"; fi
    if [[ ! -f "benchmarks/$script" ]]; then
        echo "=== $script: missing, skipped"
        continue
    fi
    echo "=== $PY benchmarks/$script $sizes --device $DEVICE --threads $THREADS"
    start=$(date +%s)
    # shellcheck disable=SC2086
    if ! "$PY" "benchmarks/$script" $sizes --device "$DEVICE" --threads "$THREADS"; then
        echo "=== FAILED: $script $sizes"
        failed+=("$script $sizes")
        status=1
    fi
    echo "=== $(( $(date +%s) - start )) s"
done
echo "=== all: $(( $(date +%s) - total_start )) s, device $DEVICE, sizes $SIZES, ${#failed[@]} failed"
for f in "${failed[@]+"${failed[@]}"}"; do echo "===   failed: $f"; done
exit $status
