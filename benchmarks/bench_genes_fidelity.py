"""Fidelity of ``pp.dropout_stats`` / ``pp.dropout_genes`` against M3Drop, on real count data.

For each count dataset in ``../shared/data`` this compares our statistics and gene rankings with

- the PyPI ``M3Drop`` package (0.5.3, import name ``M3Drop``): its file-based NBumi pipeline
  ``ComputeBlockA`` (method-of-moments sizes), ``ComputeBlockB`` (size-mean trend and expected
  dropouts) and ``RunModelComparison`` (combined-dropout z-test, p-values written to CSV);
- dense NumPy transcriptions of R M3Drop's ``NBumiFitModel`` + ``NBumiFeatureSelectionCombinedDrop``
  (``nbumi_reference``) and ``M3DropFeatureSelection`` (``m3drop_reference``), following
  ``shared/docs/ALGORITHMS.md`` §3-§4. M3Drop 0.5.3 has no Michaelis-Menten feature selection,
  so the ``m3drop`` flavour is checked against the transcription only.

Prints a markdown table and writes it into ``benchmarks/RESULTS.md`` between the
``bench_genes_fidelity`` markers. Run: ``.venv/bin/python benchmarks/bench_genes_fidelity.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _results import write_section
from scipy import optimize, sparse, stats

import scdropout as sd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
COUNT_DATASETS = (
    "deng",
    "pollen",
    "cellbench_celseq2",
    "cellbench_dropseq",
    "mouse_bladder",
    "worm_neuron",
    "cbmc_citeseq",
)
STATS_KEY = "dropout"
NB_KEY = "dropout_genes"
MM_KEY = "dropout_genes_mm"


# --- RESULTS.md ---------------------------------------------------------------------------------


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    """Render ``df`` (index ignored) as a GitHub markdown table."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        cells = []
        for v in row:
            if isinstance(v, float | np.floating):
                cells.append("n/a" if np.isnan(v) else floatfmt.format(v))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_counts(name: str, shared: Path = SHARED) -> ad.AnnData:
    """Read ``shared/data/<name>.h5ad`` and keep genes with at least one count (as M3Drop does)."""
    a = ad.read_h5ad(shared / "data" / f"{name}.h5ad")
    a.X = sparse.csr_matrix(a.X, dtype=np.float32)
    keep = np.asarray(a.X.sum(axis=0)).ravel() > 0
    return a[:, keep].copy()


# --- references -----------------------------------------------------------------------------------


def nbumi_reference(C: np.ndarray, *, block: int = 2048) -> dict[str, np.ndarray]:
    """R ``NBumiFitModel`` + ``NBumiFeatureSelectionCombinedDrop`` on dense cells x genes counts.

    ALGORITHMS.md §4.1-§4.2 literally: method-of-moments sizes with the under-dispersion rule,
    the OLS size trend on genes with 0 < r < max(r) (only log2 mean > 4 genes when more than 2000
    are), expected rate clamped at 1/N, one-sided z-test, order by p then larger O - E.
    Genes are processed in blocks so that only N x ``block`` floats are dense at a time.
    """
    n, g = C.shape
    tj = C.sum(0, dtype=np.float64)  # float64 sums: float32 ones lose digits on read counts
    ti = C.sum(1, dtype=np.float64)
    total = tj.sum()
    ss = np.empty(g)
    for lo in range(0, g, block):
        c = np.asarray(C[:, lo : lo + block], dtype=np.float64)
        mu = np.outer(ti, tj[lo : lo + block]) / total
        ss[lo : lo + block] = ((c - mu) ** 2).sum(0)
    with np.errstate(divide="ignore"):
        raw = tj**2 * (ti**2).sum() / total**2 / (ss - tj)
    size = raw.copy()
    size[size < 0] = 10 * raw.max()
    size[size < 1e-10] = 1e-10
    mean = tj / n
    forfit = (size < size.max()) & (tj > 0) & (size > 0)
    high = np.log2(mean) > 4
    if high.sum() > 2000:
        forfit &= high
    b1, b0 = np.polyfit(np.log(mean[forfit]), np.log(size[forfit]), 1)
    r = np.exp(b0 + b1 * np.log(mean))
    expected = np.empty(g)
    var_e = np.empty(g)
    observed = np.empty(g)
    for lo in range(0, g, block):
        sl = slice(lo, lo + block)
        mu = np.outer(ti, tj[sl]) / total
        P = np.exp(-r[sl] * np.log1p(mu / r[sl]))
        expected[sl] = P.mean(0)
        var_e[sl] = (P * (1 - P)).sum(0) / n**2
        observed[sl] = (np.asarray(C[:, sl]) == 0).mean(0)
    unclamped = expected.copy()
    expected = np.maximum(expected, 1 / n)
    z = (observed - expected) / np.sqrt(var_e + observed * (1 - observed) / n)
    pval = stats.norm.sf(z)
    order = np.lexsort((expected - observed, pval))
    return {
        "size": size,
        "trend": np.array([b0, b1]),
        "smoothed_size": r,
        "expected": expected,
        "expected_unclamped": unclamped,
        "observed": observed,
        "pval": pval,
        "order": order,
    }


def m3drop_reference(C: np.ndarray) -> dict[str, np.ndarray | float]:
    """R ``M3DropFeatureSelection`` (Michaelis-Menten) on dense cells x genes counts.

    ALGORITHMS.md §3: counts scaled to the median library size, least-squares K (= the Gaussian
    maximum-likelihood K), K_g = p s / (1 - p) tested on the log scale against K with
    sigma_K = sd(log K_g - log K) / sqrt(G) (R's sd, N - 1). Every gene must be detected.
    """
    C = np.asarray(C, dtype=np.float64)
    lib = C.sum(1)
    X = C / lib[:, None] * np.median(lib)
    n = X.shape[0]
    p = 1 - (X > 0).mean(0)
    s = X.mean(0)
    se_p = np.sqrt(p * (1 - p) / n)
    se_s = np.sqrt(np.maximum((X**2).mean(0) - s**2, 0) / n)

    def sse(log_k: float) -> float:
        k = np.exp(log_k)
        return float(np.sum((p - k / (k + s)) ** 2))

    lo, hi = np.log(s.min()) - 15, np.log(s.max()) + 15
    grid = np.linspace(lo, hi, 241)
    i = int(np.argmin([sse(v) for v in grid]))
    res = optimize.minimize_scalar(
        sse,
        bounds=(grid[max(i - 1, 0)], grid[min(i + 1, 240)]),
        method="bounded",
        options={"xatol": 1e-12},
    )
    K = float(np.exp(res.x))
    p0 = p.copy()
    p0[p == 0] = p[p > 0].min() / 2
    kg = p0 * s / (1 - p0)
    se_k = kg * np.sqrt((se_s / s) ** 2 + (se_p / p0) ** 2)
    with np.errstate(divide="ignore"):
        delta = np.abs(np.log(np.maximum(kg - se_k, 1e-100)) - np.log(kg))
    delta[kg - se_k <= 0] = 1e10
    sig_k = np.std(np.log(kg) - np.log(K), ddof=1) / np.sqrt(kg.size)
    z = (np.log(kg) - np.log(K)) / np.sqrt(delta**2 + sig_k**2)
    pval = stats.norm.sf(z)
    pval[p == 0] = 1.0
    pval[np.isnan(pval)] = 1.0
    effect = kg / K
    order = np.lexsort((-effect, pval))
    return {"K": K, "p": p, "s": s, "pval": pval, "effect": effect, "order": order}


def run_m3drop_package(adata: ad.AnnData, workdir: str | None = None) -> dict[str, np.ndarray]:
    """PyPI M3Drop 0.5.3's NBumi pipeline on ``adata.X`` (it reads only .h5ad files).

    Returns sizes, trend, expected (unclamped) and observed rates and p-values aligned to the
    genes M3Drop keeps (t_g > 0), plus its ranking as in its CSV (sorted by p-value).
    """
    from M3Drop.ComputeBlockCPU import ComputeBlockA, ComputeBlockB
    from M3Drop.FeatureSelectionCPU import RunModelComparison

    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    d = Path(workdir or tmp.name)
    path = str(d / "counts.h5ad")
    ad.AnnData(
        X=sparse.csr_matrix(adata.X),
        obs=pd.DataFrame(index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
    ).write_h5ad(path)
    csv = str(d / "combined_drop.csv")
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy: log2(where=) without out=, inside M3Drop
            a = ComputeBlockA(path, calc_djs=True)
            b = ComputeBlockB(path, a)
            names = np.asarray(adata.var_names)[b["mask"]]
            RunModelComparison(path, b, filtered_gene_names=names, combined_drop_csv=csv)
        table = pd.read_csv(csv, index_col=0)
    finally:
        if tmp is not None:
            tmp.cleanup()
    nc = b["nc"]
    return {
        "mask": np.asarray(b["mask"]),
        "size": np.asarray(b["sizes"]),
        "trend": np.asarray(b["regression_coeffs"], dtype=np.float64),
        "smoothed_size": np.asarray(b["exp_size"]),
        "expected": np.asarray(b["expected_dropouts"]) / nc,
        "observed": np.asarray(b["djs"]) / nc,
        "pval": table["p.value"].reindex(names).to_numpy(),
        "ranked_names": table.index.to_numpy(),
    }


# --- ours ---------------------------------------------------------------------------------------


def run_ours(adata: ad.AnnData) -> ad.AnnData:
    """Our dropout_stats and both dropout_genes flavours, on a copy."""
    a = ad.AnnData(X=adata.X.copy(), obs=adata.obs[[]].copy(), var=adata.var[[]].copy())
    sd.pp.dropout_stats(a, key_added=STATS_KEY)
    sd.pp.dropout_genes(a, flavor="nbumi", key_added=NB_KEY)
    sd.pp.dropout_genes(a, flavor="m3drop", key_added=MM_KEY)
    return a


def top_names(a: ad.AnnData, key: str, k: int) -> set[str]:
    """The ``k`` best-ranked genes of ``pp.dropout_genes`` under ``key``."""
    table = sd.get.dropout_genes(a, key=key)
    return set(table.index[:k])


def jaccard(x: set, y: set) -> float:
    return len(x & y) / len(x | y) if x | y else 1.0


def compare(name: str, shared: Path = SHARED, top: int = 1000) -> dict[str, object]:
    a = load_counts(name, shared)
    k = min(top, a.n_vars // 2)
    t0 = time.perf_counter()
    ours = run_ours(a)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    pkg = run_m3drop_package(a)
    t_pkg = time.perf_counter() - t0
    ref = nbumi_reference(a.X.toarray())
    mm = m3drop_reference(a.X.toarray())
    names = np.asarray(a.var_names)
    st = sd.get.dropout_stats(ours, key=STATS_KEY)
    nb = sd.get.dropout_genes(ours, key=NB_KEY).reindex(names)
    mmt = sd.get.dropout_genes(ours, key=MM_KEY).reindex(names)
    ours_nb = top_names(ours, NB_KEY, k)
    ours_mm = top_names(ours, MM_KEY, k)
    e_ours = st["expected"].to_numpy()
    return {
        "dataset": name,
        "cells": a.n_obs,
        "genes": a.n_vars,
        "top k": k,
        "Jaccard nbumi vs M3Drop 0.5.3": jaccard(ours_nb, set(pkg["ranked_names"][:k])),
        "Jaccard nbumi vs R transcription": jaccard(ours_nb, set(names[ref["order"][:k]])),
        "Jaccard m3drop vs R transcription": jaccard(ours_mm, set(names[mm["order"][:k]])),
        "Spearman p (nbumi vs 0.5.3)": stats.spearmanr(nb["pval"], pkg["pval"]).statistic,
        "Spearman p (m3drop vs R)": stats.spearmanr(mmt["pval"], mm["pval"]).statistic,
        "max abs diff expected (vs 0.5.3)": float(np.max(np.abs(e_ours - pkg["expected"]))),
        "max abs diff expected (vs 0.5.3, where its rate >= 1/N)": float(
            np.max(np.abs(e_ours - pkg["expected"])[pkg["expected"] >= 1 / a.n_obs])
        ),
        "max abs diff expected (vs R)": float(np.max(np.abs(e_ours - ref["expected"]))),
        "seconds ours (3 calls) / 0.5.3": f"{t_ours:.2f} / {t_pkg:.2f}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(COUNT_DATASETS))
    parser.add_argument("--top", type=int, default=1000)
    parser.add_argument("--shared", type=Path, default=SHARED)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    sd.settings.verbosity = 0
    warm = sd.datasets.synthetic(n_cells=100, n_genes=200, random_state=1)
    run_ours(ad.AnnData(X=warm.X))  # numba compilation is not timed below
    rows = []
    for name in args.datasets:
        t0 = time.perf_counter()
        rows.append(compare(name, args.shared, args.top))
        print(f"{name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    table = markdown_table(pd.DataFrame(rows))
    body = (
        "## Gene-selection fidelity (`bench_genes_fidelity.py`)\n\n"
        f"Top k = min({args.top}, genes / 2) genes; genes with no count removed first. "
        "M3Drop 0.5.3 = PyPI `M3Drop` (ComputeBlockA/B + RunModelComparison); R transcription = "
        "dense NumPy transcription of R M3Drop per ALGORITHMS.md §3-§4 (0.5.3 has no "
        "Michaelis-Menten selection). Expected = depth-adjusted NB expected dropout rate; ours is "
        "clamped at 1/N as in R, 0.5.3 does not clamp (see benchmarks/README.md).\n\n" + table
    )
    print(body)
    if not args.no_write:
        write_section("bench_genes_fidelity", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
