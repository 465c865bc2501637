#!/usr/bin/env bash
# Build, on a machine with a package registry, the wheels experiments/gpu_check.sh installs on a GPU machine that
# has its own PyTorch stack but no registry: hydra-core, omegaconf, antlr4 (published as a source archive only,
# hence `pip wheel`) and submitit with its Hydra launcher; pure Python, no dependencies pulled. They land in the
# git-ignored .gpu_wheels/, which the GPU run carries along.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu_wheels
python -m pip wheel --no-deps -w .gpu_wheels \
    "hydra-core>=1.3.4,<1.4" "omegaconf>=2.3,<2.4" "antlr4-python3-runtime==4.9.3" submitit hydra-submitit-launcher
ls -l .gpu_wheels
