#!/usr/bin/env bash
# Run ON THE DEVICE MACHINE (repository root; $OUT set by the device tool), after
# benchmarks/gpu/wheels.sh ran here. One prepared pass of the issue-4 GPU checks, under 8 min
# (give the run timeout_s 600):
#   1. the CUDA tests (`pytest -m gpu`): training, embedding, neighbour search, smoothing and
#      imputation on the GPU agree with the CPU; CIDR's torch path on the device;
#   2. bench_autoencoder_scale.py --impute at 100,000 cells x 2,000 genes on cuda (training
#      cells/s, embedding + imputation time, peak memory, KMeans ARI).
# Everything it prints goes to $OUT/*.log; the scale row comes back as
# $OUT/bench_autoencoder_scale.json (merge it into benchmarks/_out/ here, then
# `python benchmarks/bench_autoencoder_scale.py --report`).
set -uo pipefail
: "${OUT:?run me through the device tool, which sets OUT}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || { echo "wheel install failed: run benchmarks/gpu/wheels.sh here first"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg TQDM_DISABLE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.log"
python3 -c "import torch, scanpy, anndata, scdropout; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0)); print('scanpy', scanpy.__version__, 'anndata', anndata.__version__)" 2>&1 | tee -a "$OUT/device.log"
rc=0
timeout 150 python3 -m pytest -m gpu -q -p no:cacheprovider tests/models tests/tl 2>&1 | tee "$OUT/gpu_tests.log" || rc=1
timeout 300 python3 benchmarks/bench_autoencoder_scale.py --cells 100000 --device cuda --impute 2>&1 \
  | tee "$OUT/gpu_scale.log" || rc=1
cp benchmarks/_out/bench_autoencoder_scale.json "$OUT/" 2>/dev/null || true
exit $rc
