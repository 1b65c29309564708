"""Wall time of the dropout autoencoder on the labelled count sets, against peers.md's scVI.

Run from the repository root on a quiet machine::

    python benchmarks/bench_autoencoder_wall.py [--datasets ...] [--threads 2]

For each data set of ``bench_autoencoder.DATASETS`` (same loading: 2,000 HVGs of the counts) it
times what a user waits for: ``DropoutAutoencoder(adata, random_state=0)``, ``.train()`` at the
defaults (the imputation gate fit included) and ``.get_latent(smooth=15)`` (the embedding
``tl.autoencoder`` stores), with ``settings.n_jobs``
torch threads, and prints wall and CPU seconds next to scVI's wall seconds from
``shared/benchmarks/peers.md`` (2 cores, scvi-tools 1.4.2, 4,000-step cap). It prints only;
the figures quoted in ``benchmarks/RESULTS.md`` come from a run of this script.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from bench_autoencoder import DATASETS, SHARED, SMOOTH_LATENT, load

import scdropout as sd

PEERS = SHARED.parent / "benchmarks" / "peers.md"


def peers_scvi_seconds(path: Path = PEERS) -> dict[str, float]:
    """Return scVI's wall seconds per data set from peers.md's first table (``scvi_kmeans``).

    Its cells read ``ARI / seconds``; ``n/a``, ``error`` and ``timeout`` cells are left out.
    """
    out: dict[str, float] = {}
    col = None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if col is None:
            if cells[0] == "dataset" and "scvi_kmeans" in cells:
                col = cells.index("scvi_kmeans")
            continue
        if not line.startswith("|"):
            break  # end of the first table
        value = cells[col] if len(cells) > col else ""
        if "/" in value and value.endswith("s"):
            out[cells[0]] = float(value.split("/")[1].strip()[:-1])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--threads", type=int, default=2, help="settings.n_jobs (torch threads)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    sd.settings.n_jobs = args.threads
    sd.settings.verbosity = 0
    peers = peers_scvi_seconds()
    print("| dataset | epochs | AE wall s | AE CPU s | scVI wall s (peers.md) |")
    print("|---|---:|---:|---:|---:|")
    for name in args.datasets:
        adata = load(name)
        wall, cpu = time.perf_counter(), time.process_time()
        model = sd.models.DropoutAutoencoder(adata, random_state=0)
        hist = model.train(progress_bar=False)
        model.get_latent(smooth=SMOOTH_LATENT)  # the embedding tl.autoencoder stores
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peer = peers.get(name)
        print(
            f"| {name} | {hist.n_epochs} | {wall:.1f} | {cpu:.1f} | "
            f"{'' if peer is None else f'{peer:.1f}'} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
