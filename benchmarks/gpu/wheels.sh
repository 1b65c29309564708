#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), from anywhere: downloads into <repo>/.whl/ the wheels
# that the device machine's image lacks (anndata, scanpy, igraph, leidenalg and what they need;
# torch, numpy, scipy, numba, scikit-learn, matplotlib, h5py, pandas, tqdm and pytest are there).
# Versions are the ones CI tests with. The folder is ignored through .git/info/exclude.
# Then, with a device lent, call the device tool's `run` with carry [".whl",
# "benchmarks/_out/bench_autoencoder_scale.json"] and the command `bash benchmarks/gpu/check.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
PKGS=(
  anndata==0.12.19 scverse-misc==0.0.3 array-api-compat==1.16.0 legacy-api-wrap==1.5
  natsort==8.4.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
  scanpy==1.11.5 session-info2==0.4.1 umap-learn==0.5.12 pynndescent==0.7.0
  igraph==1.0.0 texttable==1.7.2 leidenalg==0.12.0
)
PLATFORMS=()
for n in 2_17 2_24 2_27 2_28 2_31 2_34 2_35; do PLATFORMS+=(--platform "manylinux_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${PLATFORMS[@]}" -d .whl "${PKGS[@]}"
ls .whl | wc -l
du -sh .whl
