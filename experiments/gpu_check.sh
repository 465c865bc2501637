#!/usr/bin/env bash
# Every GPU check in one run (about 8 minutes on one H100/H200-class GPU); writes experiments/results/gpu.md.
#   bash experiments/gpu_wheels.sh          # first, on a machine with a package registry
#   bash experiments/gpu_check.sh [shared data dir]
# 1. installs the wheels of .gpu_wheels/ and the project without dependencies (the machine's own torch is used);
# 2. the gpu-marked tests (every task in fp32 and bf16, kill-and-resume, torch.compile, NCCL DDP when there are two
#    GPUs, a training step without host synchronisation, CPU/CUDA agreement);
# 3. experiments/bench.py for small, vlm4st and reference in fp32 and bf16 (samples/s, FLOPs per sample, share of
#    the matmul peak measured in the same run and dtype, peak device memory);
# 4. a 3-minute TaxiNYC 6 -> 6 training of the small preset (when the shared NYC data is there);
# 5. experiments/gpu_report.py assembles the report from what the steps wrote.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-outputs/gpu_check}"
SHARED="${1:-../shared/data}"
mkdir -p "$OUT"
log() { echo "[gpu_check $(date +%T)] $*"; }

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

log "gpu tests"
timeout 240 python -m pytest tests/gpu -m gpu -q -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml" \
    > "$OUT/gpu_tests.txt" 2>&1
echo "exit $?" >> "$OUT/gpu_tests.txt"

for precision in fp32 bf16; do
    flag=""; [ "$precision" = bf16 ] && flag="--bf16"
    log "bench $precision"
    timeout 150 python experiments/bench.py --device cuda $flag --presets small,vlm4st,reference \
        --batch-sizes 8,32 --warmup 3 --iters 10 --json "$OUT/bench_$precision.json" \
        > "$OUT/bench_$precision.txt" 2>&1
    echo "exit $?" >> "$OUT/bench_$precision.txt"
done

if [ -f "$SHARED/nyc_taxi_stdn_10x20_30min.series.npz" ]; then
    log "TaxiNYC 6 -> 6, small, 3 minutes"
    timeout 330 python -m vlm4st.run model=small dataset=taxinyc dataset.t_in=6 dataset.t_out=6 \
        paths.shared_data="$(cd "$SHARED" && pwd)" trainer.device=cuda trainer.epochs=500 trainer.time_budget_min=3 \
        trainer.optimizer.lr=1e-3 trainer.optimizer.fused=true trainer.batch_size=64 logger=none hydra.run.dir="$OUT/taxi6_small" \
        > "$OUT/taxi6_small.txt" 2>&1
    echo "exit $?" >> "$OUT/taxi6_small.txt"
else
    log "no shared data at $SHARED: the TaxiNYC training is skipped" | tee "$OUT/taxi6_small.txt"
fi

python experiments/gpu_report.py "$OUT" experiments/results/gpu.md
log "report: experiments/results/gpu.md"
