#!/usr/bin/env bash
# Every GPU check in one run, most important first, each step under its own time limit (at most 9.5 minutes in all
# on one H100/H200-class GPU, so that one 10-minute call does everything); writes experiments/results/gpu.md.
#   bash experiments/gpu_wheels.sh                      # first, on a machine with a package registry
#   bash experiments/gpu_check.sh [shared data dir] [steps...]
# Steps (default: all four, in this order; naming some reruns only those, and the report keeps what earlier steps
# left in the output folder):
#   tests    the gpu-marked tests but torch.compile: every task in fp32 and bf16, kill-and-resume, DDP on NCCL (two
#            GPUs) or gloo ranks sharing one GPU, a training step without host synchronisation, CPU/CUDA agreement;
#   bench    experiments/bench.py: vlm4st at batch 32 in bf16 (the speed targets), then small and vlm4st in fp32
#            (samples/s, FLOPs per sample, share of the matmul peak measured in the same run, peak device memory);
#   compile  the torch.compile test alone, with one inductor compile thread (in the first CUDA run, with the default
#            worker pool, it was still compiling when its step's time ran out; the cause is not established);
#   taxi     a TaxiNYC 6 -> 6 training of the small preset, TAXI_MINUTES long (default 1; needs the shared data).
# The project is installed without dependencies: the machine's own torch is used, plus the wheels of .gpu_wheels/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/gpu_check}"
SHARED="${1:-../shared/data}"
shift || true
STEPS="${*:-tests bench compile taxi}"
TAXI_MINUTES="${TAXI_MINUTES:-1}"
mkdir -p "$OUT"
log() { echo "[gpu_check $(date +%T)] $*"; }
# a step that outlives its limit gets SIGTERM, then SIGKILL 10 s later; the next step runs either way
limit() { local seconds=$1; shift; timeout -k 10 "$seconds" "$@"; }

if compgen -G ".gpu_wheels/*.whl" > /dev/null; then
    python -m pip install --quiet --no-index --no-deps .gpu_wheels/*.whl || exit 1
fi
python -m pip install --quiet --no-deps --no-build-isolation -e . || exit 1
python - <<'PY' || exit 1
import sys, torch
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False; run this on a machine with a CUDA GPU")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" 2>&1

bench() {  # precision, presets, seconds
    local flag=""; [ "$1" = bf16 ] && flag="--bf16"
    log "bench $1: $2"
    limit "$3" python experiments/bench.py --device cuda $flag --presets "$2" --batch-sizes 32 --warmup 3 \
        --iters 10 --json "$OUT/bench_$1.json" > "$OUT/bench_$1.txt" 2>&1
    echo "exit $?" >> "$OUT/bench_$1.txt"
}

for step in $STEPS; do
    case "$step" in
    tests)
        log "gpu tests (but torch.compile)"
        limit 130 python -m pytest tests/gpu -m gpu -k "not torch_compile" -q -n 0 -p no:cacheprovider \
            --durations=0 > "$OUT/gpu_tests.txt" 2>&1
        echo "exit $?" >> "$OUT/gpu_tests.txt" ;;
    bench)
        bench bf16 vlm4st 120
        bench fp32 small,vlm4st 90 ;;
    compile)
        log "torch.compile test"
        TORCHINDUCTOR_COMPILE_THREADS=1 limit 120 python -m pytest tests/gpu -m gpu -k torch_compile -q -n 0 \
            -p no:cacheprovider --durations=0 > "$OUT/compile_test.txt" 2>&1
        echo "exit $?" >> "$OUT/compile_test.txt" ;;
    taxi)
        if [ -f "$SHARED/nyc_taxi_stdn_10x20_30min.series.npz" ]; then
            log "TaxiNYC 6 -> 6, small, $TAXI_MINUTES minutes"
            limit $((TAXI_MINUTES * 60 + 45)) python -m vlm4st.run model=small dataset=taxinyc dataset.t_in=6 \
                dataset.t_out=6 paths.shared_data="$(cd "$SHARED" && pwd)" trainer.device=cuda trainer.epochs=500 \
                trainer.time_budget_min="$TAXI_MINUTES" trainer.optimizer.lr=1e-3 trainer.optimizer.fused=true \
                trainer.batch_size=64 logger=none hydra.run.dir="$OUT/taxi6_small" > "$OUT/taxi6_small.txt" 2>&1
            echo "exit $?" >> "$OUT/taxi6_small.txt"
        else
            log "no shared data at $SHARED: the TaxiNYC training is skipped" | tee "$OUT/taxi6_small.txt"
        fi ;;
    *) echo "gpu_check: unknown step '$step' (expected: tests bench compile taxi)" >&2; exit 2 ;;
    esac
done

python experiments/gpu_report.py "$OUT" experiments/results/gpu.md
log "report: experiments/results/gpu.md"
