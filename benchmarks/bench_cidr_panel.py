"""CIDR (ours) against PCA and t-SNE baselines on the 12 labelled datasets (issue 3 quality table).

Per dataset (input exactly as the R reference got it: ``bench_cidr.load_input``; RPKM/RPM inputs
with ``tag_type="rpkm"`` for CIDR and the same values for the baselines):

- ``cidr``: ``sd.tl.cidr`` with its defaults (flavor ``"dropout"``), automatic k, and at the
  true k (``n_clusters=k``);
- ``cidr_r``: R's figures from ``shared/reference/cidr/<name>/result.json`` (automatic k) where
  they exist;
- ``pca_ward``: PCA (50 components of the scaled log1p(x / library * 1e4), the baseline of
  ``tl.compare_clusterings``) + Ward at the true k;
- ``pca_leiden``: the same PCA + exact 15-NN graph + Leiden (resolution 1, automatic k);
- ``tsne_ward``: 2-D t-SNE (sklearn, seed 0) of that PCA + Ward at the true k.

ARI and NMI against the published labels (``obs["cell_type"]``); means over the 12 datasets.
Writes the ``bench_cidr_panel`` section of ``benchmarks/RESULTS.md``.
Run: ``.venv/bin/python benchmarks/bench_cidr_panel.py`` (``--datasets ...``, ``--no-write``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

import scdropout as sd
from scdropout.tl._baselines import pca_embedding, tsne_embedding
from scdropout.tl._compare import _leiden, _ward

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cidr import NON_INTEGER, SHARED, load_input, markdown_table, write_section
from bench_cidr_quality import DATASETS


def _scores(truth: np.ndarray, labels) -> tuple[float, float]:
    labels = np.asarray(labels)
    return (
        float(adjusted_rand_score(truth, labels)),
        float(normalized_mutual_info_score(truth, labels)),
    )


def _r_reference(name: str, shared: Path, truth: np.ndarray) -> tuple[float, float] | None:
    path = shared / "reference" / "cidr" / name / "clusters_default.csv"
    if not path.exists():
        return None
    clusters = pd.read_csv(path)["cluster"].to_numpy()
    if clusters.size != truth.size:
        return None
    return _scores(truth, clusters)


def run(name: str, shared: Path) -> dict:
    a = load_input(name, shared)
    truth = a.obs["cell_type"].astype(str).to_numpy()
    k = len(np.unique(truth))
    tag = "rpkm" if name in NON_INTEGER else "raw"
    row: dict = {"dataset": name, "cells": a.n_obs, "k": k}
    t0 = time.perf_counter()
    b = sd.tl.cidr(a, tag_type=tag, progress_bar=False, copy=True)
    row["cidr_s"] = time.perf_counter() - t0
    row["cidr_ari"], row["cidr_nmi"] = _scores(truth, b.obs["cidr"])
    row["cidr_k"] = int(b.uns["cidr"]["n_clusters"])
    b = sd.tl.cidr(a, tag_type=tag, n_clusters=k, progress_bar=False, copy=True)
    row["cidr_truek_ari"], row["cidr_truek_nmi"] = _scores(truth, b.obs["cidr"])
    r = _r_reference(name, shared, truth)
    row["cidr_r_ari"], row["cidr_r_nmi"] = r if r else (np.nan, np.nan)
    t0 = time.perf_counter()
    pcs, _ = pca_embedding(a.X, n_pcs=min(50, a.n_obs - 1, a.n_vars - 1), random_state=0)
    row["pca_s"] = time.perf_counter() - t0
    labels, _ = _ward(pcs, k)
    row["pca_ward_ari"], row["pca_ward_nmi"] = _scores(truth, labels)
    labels = _leiden(pcs, n_neighbors=15, resolution=1.0, random_state=0)
    row["pca_leiden_ari"], row["pca_leiden_nmi"] = _scores(truth, labels)
    row["pca_leiden_k"] = len(np.unique(np.asarray(labels)))
    t0 = time.perf_counter()
    emb = tsne_embedding(pcs, random_state=0, n_jobs=1)
    row["tsne_s"] = time.perf_counter() - t0
    labels, _ = _ward(emb, k)
    row["tsne_ward_ari"], row["tsne_ward_nmi"] = _scores(truth, labels)
    return row


def report(df: pd.DataFrame) -> str:
    methods = [
        ("cidr", "CIDR ours (auto k)"),
        ("cidr_truek", "CIDR ours (true k)"),
        ("cidr_r", "R cidr (auto k)"),
        ("pca_ward", "PCA + Ward"),
        ("pca_leiden", "PCA + Leiden"),
        ("tsne_ward", "t-SNE + Ward"),
    ]
    table = pd.DataFrame({"dataset": df["dataset"], "cells": df["cells"], "k": df["k"]})
    for key, label in methods:
        table[label] = [
            "n/a" if np.isnan(x) else f"{x:.3f} / {y:.3f}"
            for x, y in zip(df[f"{key}_ari"], df[f"{key}_nmi"], strict=True)
        ]
    table["CIDR k found"] = df["cidr_k"]
    table["CIDR s"] = df["cidr_s"].map(lambda s: f"{s:.1f}")
    mean = {"dataset": f"**mean ARI / NMI ({len(df)})**", "cells": "", "k": ""}
    for key, label in methods:
        ari, nmi = df[f"{key}_ari"], df[f"{key}_nmi"]
        n = int(ari.notna().sum())
        mean[label] = f"{ari.mean():.3f} / {nmi.mean():.3f}" + ("" if n == len(df) else f" ({n})")
    mean["CIDR k found"] = ""
    mean["CIDR s"] = f"{df['cidr_s'].sum():.1f}"
    table = pd.concat([table, pd.DataFrame([mean])], ignore_index=True)
    return (
        "### CIDR (ours) vs PCA and t-SNE baselines on the 12 labelled datasets\n\n"
        "Command: `.venv/bin/python benchmarks/bench_cidr_panel.py`. Cells: ARI / NMI against the "
        "published labels. CIDR ours = `sd.tl.cidr` defaults (flavor `dropout`); R cidr = the "
        "reference run in `shared/reference/cidr` (n/a where R did not run); PCA = 50 components "
        "of scaled log1p(CPM/100); Ward at the true k; Leiden on an exact 15-NN graph, "
        "resolution 1, seed 0; t-SNE = sklearn 2-D on that PCA, seed 0. Single seeded runs; "
        "seconds from one run on the 2-core machine.\n\n" + markdown_table(table)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="*", default=DATASETS)
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    logging.getLogger("scdropout").setLevel(logging.WARNING)
    rows = []
    for name in args.datasets:
        t0 = time.perf_counter()
        rows.append(run(name, args.shared))
        print(f"{name}: {time.perf_counter() - t0:.1f}s {rows[-1]}", flush=True)
    body = report(pd.DataFrame(rows))
    print(body)
    if not args.no_write:
        write_section("bench_cidr_panel", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
