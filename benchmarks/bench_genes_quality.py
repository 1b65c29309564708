"""Clustering quality of dropout-based gene selection against scanpy's HVG flavours.

For each labelled count dataset in ``../shared/data``, select the top genes with

- ``nbumi``: ``pp.dropout_stats`` + ``pp.dropout_genes(flavor="nbumi")``;
- ``m3drop``: ``pp.dropout_genes(flavor="m3drop")`` (Michaelis-Menten);
- ``seurat``: ``sc.pp.highly_variable_genes(flavor="seurat")`` on log1p(normalize_total 1e4);
- ``seurat_v3``: ``sc.pp.highly_variable_genes(flavor="seurat_v3")`` on counts (needs
  scikit-misc; the column is skipped if it is missing);
- ``all genes``: no selection, for reference;

then run one fixed pipeline for every method: normalize_total(target_sum=1e4) over all genes,
log1p, keep the selected genes, scale each gene to unit variance (zero-centred, clipped at 10, as
scanpy's standard workflow), PCA with min(50, cells - 1, genes - 1) components (ARPACK,
random_state=0), Ward agglomerative clustering (sklearn) at the true number of labels, and the
adjusted Rand index against ``obs['cell_type']``. Top k = min(1000, genes / 2) (cbmc_citeseq has
500 genes). Genes with no count are removed first.

Prints a markdown table with a mean row and writes it into ``benchmarks/RESULTS.md`` between the
``bench_genes_quality`` markers. Run: ``.venv/bin/python benchmarks/bench_genes_quality.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_genes_fidelity import (
    COUNT_DATASETS,
    SHARED,
    load_counts,
    markdown_table,
    write_section,
)

import scdropout as sd

SEED = 0
#: scanpy's default loess span first; skmisc's loess can fail on it (worm_neuron)
SEURAT_V3_SPANS = (0.3, 0.5, 1.0)
NOTES: list[str] = []


def _log_normalised(a: ad.AnnData) -> ad.AnnData:
    import scanpy as sc

    b = ad.AnnData(X=a.X.copy(), obs=a.obs[[]].copy(), var=a.var[[]].copy())
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    return b


def select_genes(a: ad.AnnData, method: str, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` genes ``method`` selects on counts ``a``."""
    import scanpy as sc

    if method == "all genes":
        return np.ones(a.n_vars, dtype=bool)
    if method in ("nbumi", "m3drop"):
        b = ad.AnnData(X=a.X.copy(), obs=a.obs[[]].copy(), var=a.var[[]].copy())
        sd.pp.dropout_stats(b)
        sd.pp.dropout_genes(b, flavor=method, n_top_genes=k)
        top = sd.get.dropout_genes(b).index[:k]
        return a.var_names.isin(top)
    if method == "seurat":
        b = _log_normalised(a)
        sc.pp.highly_variable_genes(b, flavor="seurat", n_top_genes=k)
        return b.var["highly_variable"].to_numpy()
    if method == "seurat_v3":
        b = ad.AnnData(X=a.X.copy(), obs=a.obs[[]].copy(), var=a.var[[]].copy())
        for span in SEURAT_V3_SPANS:
            try:
                sc.pp.highly_variable_genes(b, flavor="seurat_v3", n_top_genes=k, span=span)
            except ValueError as err:  # skmisc's loess: "reciprocal condition number ..."
                print(f"seurat_v3 with span={span}: {err}", file=sys.stderr)
                continue
            NOTES.append(f"seurat_v3 span {span}" if span != SEURAT_V3_SPANS[0] else "")
            return b.var["highly_variable"].to_numpy()
        msg = f"seurat_v3 failed with every span in {SEURAT_V3_SPANS}"
        raise RuntimeError(msg)
    msg = f"unknown method {method!r}"
    raise ValueError(msg)


def cluster_ari(a: ad.AnnData, mask: np.ndarray, labels: pd.Series) -> float:
    """The fixed pipeline: log-normalise, subset, scale, PCA, Ward at true k, ARI."""
    import scanpy as sc
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import adjusted_rand_score

    b = _log_normalised(a)[:, mask].copy()
    b.X = b.X.toarray() if hasattr(b.X, "toarray") else b.X  # scale densifies anyway
    sc.pp.scale(b, zero_center=True, max_value=10)
    n_comps = min(50, b.n_obs - 1, b.n_vars - 1)
    sc.tl.pca(b, n_comps=n_comps, svd_solver="arpack", random_state=SEED)
    k = labels.nunique()
    pred = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(b.obsm["X_pca"])
    return float(adjusted_rand_score(labels.to_numpy(), pred))


def methods() -> list[str]:
    out = ["nbumi", "m3drop", "seurat"]
    if importlib.util.find_spec("skmisc") is not None:
        out.append("seurat_v3")
    else:
        print("scikit-misc is not installed: skipping seurat_v3", file=sys.stderr)
    return [*out, "all genes"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(COUNT_DATASETS))
    parser.add_argument("--top", type=int, default=1000)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    sd.settings.verbosity = 0
    warnings.filterwarnings("ignore", category=FutureWarning)
    names = methods()
    warm = sd.datasets.synthetic(n_cells=100, n_genes=200, random_state=1)
    for m in ("nbumi", "m3drop"):  # numba compilation is not timed below
        select_genes(ad.AnnData(X=warm.X), m, 20)
    rows, secs = [], []
    for name in args.datasets:
        a = load_counts(name, args.shared)
        labels = a.obs["cell_type"].astype(str)
        k = min(args.top, a.n_vars // 2)
        row: dict[str, object] = {
            "dataset": name,
            "cells": a.n_obs,
            "genes": a.n_vars,
            "labels": labels.nunique(),
            "top k": k,
        }
        srow: dict[str, object] = {"dataset": name}
        NOTES.clear()
        for m in names:
            t0 = time.perf_counter()
            mask = select_genes(a, m, k)
            srow[m] = time.perf_counter() - t0
            row[m] = cluster_ari(a, mask, labels)
        row["note"] = "; ".join(n for n in NOTES if n)
        rows.append(row)
        secs.append(srow)
        print(name, {m: round(row[m], 3) for m in names}, file=sys.stderr)
    df = pd.DataFrame(rows)
    mean = dict.fromkeys(df.columns, "")
    mean.update({"dataset": "**mean**"})
    mean.update({m: float(df[m].mean()) for m in names})
    df = pd.concat([df, pd.DataFrame([mean])], ignore_index=True)
    print(markdown_table(pd.DataFrame(secs), "{:.2f}"), file=sys.stderr)  # selection seconds
    body = (
        "## Gene selection for clustering (`bench_genes_quality.py`)\n\n"
        "ARI of Ward clustering at the true number of labels on PCA of the selected genes. One "
        "fixed pipeline for every method: normalize_total 1e4 (all genes), log1p, subset to the "
        "top k genes, scale (unit variance, clip 10), PCA min(50, cells-1, genes-1) comps "
        f"(ARPACK, seed {SEED}), sklearn Ward. Top k = min({args.top}, genes / 2).\n\n"
        + markdown_table(df, "{:.3f}")
    )
    print(body)
    if not args.no_write:
        write_section("bench_genes_quality", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
