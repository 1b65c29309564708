"""Which CIDR-style variant clusters best across the 12 labelled datasets? (measurement only)

One ``sd.tl.cidr`` run per dataset (11 of the 12; add ``--datasets ... cbmc_citeseq``) (``flavor="r"``, input as R got it, see ``bench_cidr.py``)
gives the coordinates ``obsm['X_cidr']`` (20 columns); the variants re-cluster them, so every
variant shares the thresholds, dissimilarity and PCoA:

- ``r``: R's rule (calc_npc coordinates, Ward, CH second-difference k) = the default today;
- ``r_truek``: the same tree cut at the true k;
- ``ward_ch_max``: Ward on the first ``n_pcs`` coordinates, k = argmax CH over 2..20;
- ``ward10_ch_max``: the same on the first 10 coordinates;
- ``leiden_npc`` / ``leiden10`` / ``leiden20``: scanpy neighbours (15, on the first n_pcs / 10 / 20
  coordinates) + Leiden (resolution 1, seed 0).

ARI against the published labels; the mean row is over the datasets that ran. Writes the
``bench_cidr_quality`` section of ``benchmarks/RESULTS.md``. Run:
``.venv/bin/python benchmarks/bench_cidr_quality.py`` (``--datasets ...``, ``--no-write``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

import scdropout as sd
from scdropout.kernels import cidr as kc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cidr import NON_INTEGER, SHARED, load_input, markdown_table, write_section

DATASETS = [
    "buettner_mesc",
    "cellbench_celseq2",
    "cellbench_dropseq",
    "deng",
    "mouse_bladder",
    "pbmc68k_reduced",
    "pollen",
    "usoskin150",
    "worm_neuron",
    "yan",
    "zeisel",
]  # cbmc_citeseq (8,617 cells) only on request: R timed out on it and it takes minutes here


def ch_max(Y: np.ndarray, k_max: int = 20) -> np.ndarray:
    wc = kc.ward_clusters(Y, n_max=k_max)
    k = int(np.nanargmax(wc.ch_index)) + 1
    return kc.ward_clusters(Y, n_clusters=k).labels


def leiden(Y: np.ndarray) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(np.zeros((Y.shape[0], 1), dtype=np.float32))
    a.obsm["X"] = Y
    sc.pp.neighbors(a, use_rep="X", n_neighbors=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.leiden(a, resolution=1.0, random_state=0, flavor="igraph", n_iterations=2)
    return a.obs["leiden"].to_numpy()


def run(name: str, shared: Path) -> dict:
    a = load_input(name, shared)
    tag = "rpkm" if name in NON_INTEGER else "raw"
    sd.tl.cidr(a, tag_type=tag, n_jobs=2, progress_bar=False)
    u = a.uns["cidr"]
    Y = a.obsm["X_cidr"]
    npc = u["n_pcs"]
    truth = a.obs["cell_type"].astype(str).to_numpy()
    k_true = len(np.unique(truth))
    out = {"dataset": name, "cells": a.n_obs, "nPC": npc}
    variants = {
        "r": a.obs["cidr"].to_numpy(),
        "r_truek": kc.ward_clusters(Y[:, :npc], n_clusters=k_true).labels,
        "ward_ch_max": ch_max(Y[:, :npc]),
        "ward10_ch_max": ch_max(Y[:, :10]),
        "leiden_npc": leiden(Y[:, :npc]),
        "leiden10": leiden(Y[:, :10]),
        "leiden20": leiden(Y[:, :20]),
    }
    for key, lab in variants.items():
        out[key] = adjusted_rand_score(truth, lab)
        out[f"k {key}"] = len(np.unique(lab))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="*", default=DATASETS)
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    logging.getLogger("scdropout").setLevel(logging.WARNING)
    rows = []
    for name in args.datasets:
        try:
            row = run(name, args.shared)
        except Exception as err:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"{name}: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        print(json.dumps(row, default=str), flush=True)
        rows.append(row)
    df = pd.DataFrame(rows)
    aris = [
        c for c in df.columns if c not in {"dataset", "cells", "nPC"} and not c.startswith("k ")
    ]
    mean = {"dataset": f"mean ({len(df)} datasets)", "cells": "", "nPC": ""}
    mean.update({c: float(df[c].mean()) for c in aris})
    show = pd.concat([df[["dataset", "cells", "nPC", *aris]], pd.DataFrame([mean])])
    ks = df[["dataset", *[f"k {c}" for c in aris]]]
    text = "\n".join(
        [
            "### CIDR variants: ARI against published labels (measurement only)",
            "",
            "Command: `.venv/bin/python benchmarks/bench_cidr_quality.py`. Variants re-cluster the "
            "same `tl.cidr` coordinates; see the script docstring. Default unchanged (`r`).",
            "",
            markdown_table(show),
            "",
            "Number of clusters found:",
            "",
            markdown_table(ks),
        ]
    )
    print(text)
    if not args.no_write:
        write_section("bench_cidr_quality", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
