"""Benchmarks of the dropout autoencoder (issue 4): speed, clustering, held-out imputation.

Three parts, each optional on the command line:

- ``speed``: seconds per training epoch on ``sd.datasets.synthetic(n_cells=10000,
  n_genes=2000)`` at the defaults (batch 128, hidden (128,), NB, mask_rate 0.1), for 1 and 2
  torch threads; also cells/s of ``get_latent``.
- ``cluster``: on each labelled count dataset in ``../shared/data``: drop genes seen in < 3
  cells, keep the top 2000 genes by ``sc.pp.highly_variable_genes(flavor="seurat")`` on
  log1p(normalize_total 1e4) (all genes when fewer), then
  PCA baseline = scale + 50 PCs (min(50, cells-1)) of log1p(normalize_total 1e4) and
  AE = ``tl.autoencoder`` on the raw counts of the same genes (defaults, random_state=0).
  Ward and KMeans (n_init=10) at the true k; ARI and NMI against ``obs['cell_type']``.
- ``impute``: held-out protocol of ALGORITHMS.md §7: 10% of each cell's non-zero counts (same
  genes) set to 0 with a seeded RNG, the model trained on the corrupted matrix, predictions
  for the held-out entries compared on the count scale (median and mean absolute error,
  Pearson/Spearman correlation of log1p values) against (a) no imputation (0), (b) the gene's
  mean scaled by the cell's (corrupted) library size, (c) kNN smoothing: the mean of the
  library-normalised counts of the 15 nearest neighbours in 30-PC space, rescaled to the
  cell's library. Coverage of the held-out counts by mean ± 2 sd of 20 MC-dropout passes
  (epistemic only) and by the NB predictive interval mean ± 2·sqrt(sd² + μ + μ²/θ).

Writes a markdown section into ``benchmarks/RESULTS.md`` between the ``bench_autoencoder``
markers. Run: ``.venv/bin/python benchmarks/bench_autoencoder.py [speed cluster impute]
[--datasets deng pollen ...] [--threads 1]``. The machine is shared with other jobs: timings
are noisy.
"""

from __future__ import annotations

import argparse
import platform
import re
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy import sparse, stats

import scdropout as sd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
OUT = REPO / "benchmarks" / "_out"
START, END = "<!-- bench_autoencoder:start -->", "<!-- bench_autoencoder:end -->"
DATASETS = [
    "deng",
    "pollen",
    "cellbench_celseq2",
    "cellbench_dropseq",
    "mouse_bladder",
    "worm_neuron",
    "cbmc_citeseq",
]


def load(name: str) -> ad.AnnData:
    import scanpy as sc

    adata = ad.read_h5ad(SHARED / f"{name}.h5ad")
    adata.X = sparse.csr_matrix(adata.X, dtype=np.float32)
    keep = np.asarray((adata.X > 0).sum(0)).ravel() >= 3
    adata = adata[:, keep].copy()
    adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()
    if adata.n_vars > 2000:
        tmp = adata.copy()
        sc.pp.normalize_total(tmp, target_sum=1e4)
        sc.pp.log1p(tmp)
        sc.pp.highly_variable_genes(tmp, flavor="seurat", n_top_genes=2000)
        adata = adata[:, tmp.var["highly_variable"].to_numpy()].copy()
        adata = adata[np.asarray(adata.X.sum(1)).ravel() > 0].copy()
    return adata


def pca_embedding(adata: ad.AnnData, n_comps: int = 50) -> np.ndarray:
    import scanpy as sc

    tmp = adata.copy()
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.scale(tmp, max_value=10)
    n = min(n_comps, tmp.n_obs - 1, tmp.n_vars - 1)
    sc.pp.pca(tmp, n_comps=n, random_state=0)
    return tmp.obsm["X_pca"]


def cluster_scores(emb: np.ndarray, labels: np.ndarray, k: int) -> dict[str, float]:
    from sklearn.cluster import AgglomerativeClustering, KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    ward = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(emb)
    km = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(emb)
    return {
        "ward_ari": adjusted_rand_score(labels, ward),
        "ward_nmi": normalized_mutual_info_score(labels, ward),
        "kmeans_ari": adjusted_rand_score(labels, km),
        "kmeans_nmi": normalized_mutual_info_score(labels, km),
    }


def run_speed(threads: list[int]) -> str:
    adata = sd.datasets.synthetic(n_cells=10000, n_genes=2000, random_state=0, true_counts=False)
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        model = sd.models.DropoutAutoencoder(adata)
        model.train(max_epochs=1, progress_bar=False)  # warm-up (imports, allocations)
        t0 = time.perf_counter()
        model.train(max_epochs=3, progress_bar=False, early_stopping=False)
        per_epoch = (time.perf_counter() - t0) / 3
        t0 = time.perf_counter()
        model.get_latent()
        lat = time.perf_counter() - t0
        rows.append((t, per_epoch, 9000 / per_epoch, adata.n_obs / lat))
        print(f"threads={t}: {per_epoch:.2f} s/epoch", flush=True)
    lines = [
        "| torch threads | s / epoch | training cells/s | get_latent cells/s |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {t} | {e:.2f} | {c:,.0f} | {g:,.0f} |" for t, e, c, g in rows]
    return "\n".join(lines)


def run_cluster(names: list[str], **ae_kw) -> tuple[str, pd.DataFrame]:
    rows = []
    for name in names:
        adata = load(name)
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        k = len(set(labels))
        t0 = time.perf_counter()
        pca = pca_embedding(adata)
        t_pca = time.perf_counter() - t0
        t0 = time.perf_counter()
        sd.tl.autoencoder(adata, progress_bar=False, random_state=0, **ae_kw)
        t_ae = time.perf_counter() - t0
        for method, emb, secs in [("PCA", pca, t_pca), ("AE", adata.obsm["X_dae"], t_ae)]:
            rows.append(
                {
                    "dataset": name,
                    "cells": adata.n_obs,
                    "genes": adata.n_vars,
                    "k": k,
                    "method": method,
                    "seconds": secs,
                    "epochs": adata.uns["dae"]["n_epochs"] if method == "AE" else 0,
                    **cluster_scores(emb, labels, k),
                }
            )
        print(pd.DataFrame(rows[-2:]).to_string(), flush=True)
    df = merge_rows(pd.DataFrame(rows), "bench_autoencoder_cluster.csv")
    return cluster_table(df), df


def merge_rows(new: pd.DataFrame, fname: str) -> pd.DataFrame:
    """Store ``new`` in ``_out/fname``, replacing earlier rows of the same datasets."""
    path = OUT / fname
    if path.exists():
        old = pd.read_csv(path)
        old = old[~old["dataset"].isin(set(new["dataset"]))]
        new = pd.concat([old, new], ignore_index=True)
    order = {d: i for i, d in enumerate(DATASETS)}
    new = new.sort_values("dataset", key=lambda c: c.map(order), kind="stable")
    new.to_csv(path, index=False)
    return new


def cluster_table(df: pd.DataFrame) -> str:
    wide = df.pivot_table(
        index="dataset",
        columns="method",
        values=["ward_ari", "kmeans_ari", "ward_nmi", "seconds", "epochs"],
        sort=False,
    )
    lines = [
        "| dataset | cells | genes | k | Ward ARI PCA | Ward ARI AE | KMeans ARI PCA | "
        "KMeans ARI AE | Ward NMI PCA | Ward NMI AE | AE epochs | AE s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    meta = df.drop_duplicates("dataset").set_index("dataset")
    for ds in wide.index:
        w = wide.loc[ds]
        m = meta.loc[ds]
        lines.append(
            f"| {ds} | {m['cells']} | {m['genes']} | {m['k']} | {w[('ward_ari', 'PCA')]:.3f} | "
            f"{w[('ward_ari', 'AE')]:.3f} | {w[('kmeans_ari', 'PCA')]:.3f} | "
            f"{w[('kmeans_ari', 'AE')]:.3f} | {w[('ward_nmi', 'PCA')]:.3f} | "
            f"{w[('ward_nmi', 'AE')]:.3f} | {w[('epochs', 'AE')]:.0f} | "
            f"{w[('seconds', 'AE')]:.1f} |"
        )
    mean = wide.mean()
    lines.append(
        f"| **mean** | | | | {mean[('ward_ari', 'PCA')]:.3f} | {mean[('ward_ari', 'AE')]:.3f} | "
        f"{mean[('kmeans_ari', 'PCA')]:.3f} | {mean[('kmeans_ari', 'AE')]:.3f} | "
        f"{mean[('ward_nmi', 'PCA')]:.3f} | {mean[('ward_nmi', 'AE')]:.3f} | | |"
    )
    return "\n".join(lines)


def holdout(X: sparse.csr_matrix, frac: float, rng: np.random.Generator):
    """Zero ``frac`` of each cell's non-zeros; return the corrupted matrix and (rows, cols, x)."""
    X = X.tocsr().copy()
    X.eliminate_zeros()
    rows, cols, vals = [], [], []
    data = X.data.copy()
    for i in range(X.shape[0]):
        lo, hi = X.indptr[i], X.indptr[i + 1]
        n = hi - lo
        m = round(frac * n)
        if m == 0:
            continue
        pick = lo + rng.choice(n, size=m, replace=False)
        rows.append(np.full(m, i))
        cols.append(X.indices[pick])
        vals.append(data[pick].copy())
        data[pick] = 0
    Xc = sparse.csr_matrix((data, X.indices.copy(), X.indptr.copy()), shape=X.shape)
    Xc.eliminate_zeros()
    return Xc, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def knn_smooth(Xc: sparse.csr_matrix, k: int = 15) -> np.ndarray:
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors

    tmp = ad.AnnData(Xc.copy())
    sc.pp.normalize_total(tmp, target_sum=1e4)
    norm = tmp.X.copy()
    sc.pp.log1p(tmp)
    n = min(30, tmp.n_obs - 1, tmp.n_vars - 1)
    sc.pp.pca(tmp, n_comps=n, random_state=0)
    nn = NearestNeighbors(n_neighbors=min(k, tmp.n_obs)).fit(tmp.obsm["X_pca"])
    _, idx = nn.kneighbors(tmp.obsm["X_pca"])
    n_cells = Xc.shape[0]
    W = sparse.csr_matrix(
        (
            np.full(idx.size, 1.0 / idx.shape[1]),
            idx.ravel(),
            np.arange(0, idx.size + 1, idx.shape[1]),
        ),
        shape=(n_cells, n_cells),
    )
    smooth = np.asarray((W @ norm).todense()) / 1e4
    lib = np.asarray(Xc.sum(1)).ravel()
    return smooth * lib[:, None]


def impute_metrics(x: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    err = np.abs(x - pred)
    return {
        "median_ae": float(np.median(err)),
        "mean_ae": float(err.mean()),
        "pearson": float(stats.pearsonr(np.log1p(x), np.log1p(pred))[0]),
        "spearman": float(stats.spearmanr(x, pred)[0]),
    }


def run_impute(names: list[str], mc_samples: int = 20, **ae_kw) -> tuple[str, pd.DataFrame]:
    rows = []
    for name in names:
        adata = load(name)
        rng = np.random.default_rng(0)
        Xc, r, c, x = holdout(adata.X, 0.1, rng)
        keep = np.asarray(Xc.sum(1)).ravel() > 0
        if not keep.all():  # cells that lost all their counts cannot be modelled
            sel = keep[r]
            new_idx = np.cumsum(keep) - 1
            r, c, x = new_idx[r[sel]], c[sel], x[sel]
            Xc = Xc[keep]
        corrupted = ad.AnnData(Xc, var=adata.var[[]].copy())
        lib = np.asarray(Xc.sum(1)).ravel()
        gene_frac = np.asarray(Xc.sum(0)).ravel() / lib.sum()
        preds = {
            "zero": np.zeros_like(x),
            "gene mean": lib[r] * gene_frac[c],
            "kNN smoothing": knn_smooth(Xc)[r, c],
        }
        t0 = time.perf_counter()
        model = sd.models.DropoutAutoencoder(corrupted, random_state=0, **ae_kw)
        model.train(progress_bar=False)
        mean_det = model.get_imputed()
        mc_mean, mc_sd = model.get_imputed(mc_samples=mc_samples)
        secs = time.perf_counter() - t0
        preds["AE"] = mean_det[r, c]
        preds["AE (MC mean)"] = mc_mean[r, c]
        mu, s = mc_mean[r, c], mc_sd[r, c]
        cover_epi = float(np.mean(np.abs(x - mu) <= 2 * s))
        theta = (
            torch.exp(model.module.log_theta).clamp(1e-4, 1e4).detach().cpu().numpy()
            if model.module.log_theta is not None
            else np.full(Xc.shape[1], np.inf)
        )
        pred_sd = np.sqrt(s**2 + mu + mu**2 / theta[c])
        cover_pred = float(np.mean(np.abs(x - mu) <= 2 * pred_sd))
        for method, p in preds.items():
            rows.append(
                {
                    "dataset": name,
                    "n_heldout": len(x),
                    "method": method,
                    **impute_metrics(x, p),
                    "cover_mc": cover_epi if method == "AE (MC mean)" else np.nan,
                    "cover_pred": cover_pred if method == "AE (MC mean)" else np.nan,
                    "seconds": secs if method == "AE" else np.nan,
                }
            )
        print(pd.DataFrame(rows[-len(preds) :]).to_string(), flush=True)
    df = merge_rows(pd.DataFrame(rows), "bench_autoencoder_impute.csv")
    return impute_table(df), df


def impute_table(df: pd.DataFrame) -> str:
    lines = [
        "| dataset | held-out | method | median AE | mean AE | Pearson (log1p) | Spearman | "
        "coverage ±2 sd MC | coverage ±2 sd MC+NB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for _, row in df.iterrows():
        cov = (
            f"{row['cover_mc']:.3f} | {row['cover_pred']:.3f}"
            if np.isfinite(row["cover_mc"])
            else " | "
        )
        lines.append(
            f"| {row['dataset']} | {row['n_heldout']} | {row['method']} | {row['median_ae']:.3f} | "
            f"{row['mean_ae']:.3f} | {row['pearson']:.3f} | {row['spearman']:.3f} | {cov} |"
        )
    return "\n".join(lines)


NOTES = """
Notes (2026-11-22 run; load average 3-11 on the 2 CPUs from parallel jobs, so every time
here is inflated; the speed table was taken at load ~3, an earlier run at load ~7 gave
9.7 s/epoch for the same setting):

- Speed: the issue's target (< 2 s/epoch at 10,000 x 2,000 on 2 cores) is not met on this
  shared machine (4.3 s/epoch on 1 thread); with 2 threads OpenMP oversubscription makes it
  slower than 1 thread. The likelihood terms that vanish at x = 0 (lgamma, digamma,
  x log mu) are evaluated on the non-zeros only (equal to the dense sum; tested), which cut
  a step ~2x.
- Clustering: the AE embedding beats 50 PCs on the two larger UMI datasets (worm_neuron
  +0.06, cbmc_citeseq +0.23 Ward ARI), ties on cellbench_celseq2, and loses on the small
  full-length / plate sets (pollen 64 cells, deng), cellbench_dropseq and mouse_bladder.
  Mean KMeans ARI 0.570 vs 0.569 (tie); mean Ward ARI 0.587 vs 0.619: the issue's "beat PCA
  on average" is not met for Ward.
- Imputation: the AE has the lowest median and mean absolute error and the highest Pearson
  and Spearman correlation on mouse_bladder, worm_neuron and cbmc_citeseq; on the two
  cellbench sets and deng it is within 1% of kNN smoothing on correlation (kNN slightly
  ahead) and beats the gene-mean baseline everywhere. On read-count data (deng, pollen) the
  "zero" prediction gets a low median error because held-out reads are large; the
  correlations are the meaningful columns there.
- Calibration: mean +- 2 MC-dropout sd (20 passes) covers only 10-30% of held-out counts
  (epistemic only); adding the NB sampling variance (sd^2 + mu + mu^2/theta) covers 29-92%.
- Not done yet: CIDR-style imputation baseline (d), the false-signal check (permuted
  genes), scvi-tools side by side, the 100,000-cell run, GPU throughput.
"""


def write_section(body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        text = re.sub(
            re.escape(START) + ".*?" + re.escape(END), lambda _: section, text, flags=re.S
        )
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parts", nargs="*", default=["speed", "cluster", "impute"])
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (cluster, impute)")
    parser.add_argument("--likelihood", default="nb")
    parser.add_argument("--mask-rate", type=float, default=0.1)
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--no-early-stopping", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    sd.settings.verbosity = 0
    OUT.mkdir(exist_ok=True)
    ae_kw = {"likelihood": args.likelihood, "mask_rate": args.mask_rate}
    sections = [
        "## Dropout autoencoder (`tl.autoencoder`, issue 4)",
        "",
        "`python benchmarks/bench_autoencoder.py [speed] [cluster] [impute] [--datasets ...]` "
        "(parts run separately, results stored in `benchmarks/_out/`), "
        f"{time.strftime('%Y-%m-%d')}: {platform.machine()}, 2 CPUs shared with other jobs "
        "(timings are noisy; the lead re-runs them), Python "
        f"{platform.python_version()}, torch {torch.__version__}, CPU only. AE = defaults "
        f"(likelihood={args.likelihood!r}, mask_rate={args.mask_rate}, n_latent 10, hidden "
        "(128,), dropout 0.1, batch 128, lr 1e-3, early stopping patience 20 on a 10% "
        "validation split, max_epochs = min(round(20000/N*400), 400)), random_state=0.",
    ]
    if "speed" in args.parts:
        (OUT / "bench_autoencoder_speed.md").write_text(run_speed([1, 2]))
    torch.set_num_threads(args.threads)
    if "cluster" in args.parts:
        run_cluster(
            args.datasets,
            max_epochs=args.max_epochs,
            early_stopping=not args.no_early_stopping,
            **ae_kw,
        )
    if "impute" in args.parts:
        run_impute(args.datasets, **ae_kw)
    # the section is assembled from everything stored in _out (parts may run separately)
    if (OUT / "bench_autoencoder_speed.md").exists():
        sections += ["", "### Speed: 10,000 cells x 2,000 genes (synthetic), defaults", ""]
        sections.append((OUT / "bench_autoencoder_speed.md").read_text())
    if (OUT / "bench_autoencoder_cluster.csv").exists():
        df = pd.read_csv(OUT / "bench_autoencoder_cluster.csv")
        sections += [
            "",
            "### Clustering at the true k: AE embedding vs 50 PCs (same 2,000 HVGs)",
            "",
            cluster_table(df),
        ]
    if (OUT / "bench_autoencoder_impute.csv").exists():
        df = pd.read_csv(OUT / "bench_autoencoder_impute.csv")
        sections += [
            "",
            "### Held-out imputation (ALGORITHMS.md §7: 10% of each cell's non-zeros, seed 0)",
            "",
            impute_table(df),
        ]
    body = "\n".join(sections) + "\n" + NOTES
    print(body)
    if not args.no_write:
        write_section(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
