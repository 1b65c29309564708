"""scvi-tools side by side with the dropout autoencoder (issue 4): clustering and imputation.

Runs under a separate venv that has scvi-tools (never the project's):
``/work/scvi-venv/bin/python benchmarks/bench_scvi.py [--datasets ...] [--parts cluster impute]``.
It imports the data loading and scoring of ``bench_autoencoder.py`` (so the same 2,000 HVGs,
the same true-k Ward / KMeans / Leiden scoring and the same held-out split), which needs
``scdropout``'s own dependencies (numba, scanpy, ...) in that venv as well.

- ``cluster``: ``scvi.model.SCVI`` with its defaults (n_latent 10, n_hidden 128, 1 layer, ZINB,
  dropout 0.1) on the raw counts of the 2,000 genes, ``max_epochs`` by scVI's own rule
  ``min(round(20000 / n_cells * 400), 400)`` but capped at 4,000 minibatch steps as in
  ``shared/benchmarks/peers.md``; ``get_latent_representation()`` scored by
  ``bench_autoencoder.cluster_scores``.
- ``impute``: ``bench_autoencoder.holdout`` (10% of each cell's non-zeros, ``default_rng(0)``),
  a second SCVI trained on the corrupted counts, prediction = ``get_normalized_expression(
  library_size=1)`` times the cell's (corrupted) library size, scored with
  ``bench_autoencoder.impute_metrics`` on the held-out entries.

Seconds are wall and CPU (``time.process_time``) of training + inference, 1 torch thread, on a
2-core machine shared with other jobs. Rows go to ``benchmarks/_out/bench_scvi.csv`` and the
section between the ``bench_scvi`` markers of ``benchmarks/RESULTS.md`` (with the AE and PCA
figures stored by ``bench_autoencoder_defaults.py`` / ``bench_autoencoder.py`` alongside).
``--report`` only rebuilds the section (pandas only, any venv).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _results import write_section

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = REPO / "benchmarks" / "_out"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
CSV = OUT / "bench_scvi.csv"
sys.path.insert(0, str(REPO))  # scdropout from the source tree (the scVI venv does not install it)
sys.path.insert(0, str(HERE))
from bench_autoencoder import DATASETS  # noqa: E402 - needs the paths above

MAX_STEPS = 4000
BATCH = 128


def scvi_epochs(n_cells: int) -> int:
    """scVI's default epoch rule, capped so that training takes at most ``MAX_STEPS`` steps."""
    default = min(round(20000 / n_cells * 400), 400)
    steps_per_epoch = math.ceil(0.9 * n_cells / BATCH)
    return max(1, min(default, MAX_STEPS // steps_per_epoch))


def fit_scvi(adata, seed: int = 0):
    import scvi
    import torch

    scvi.settings.seed = seed
    torch.set_num_threads(1)
    adata = adata.copy()
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata)  # defaults: n_latent 10, n_hidden 128, ZINB
    epochs = scvi_epochs(adata.n_obs)
    model.train(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        batch_size=BATCH,
    )
    return model, epochs


def append(rec: dict) -> None:
    old = pd.read_csv(CSV) if CSV.exists() else pd.DataFrame()
    if len(old):
        old = old[~((old["dataset"] == rec["dataset"]) & (old["part"] == rec["part"]))]
    pd.concat([old, pd.DataFrame([rec])], ignore_index=True).to_csv(CSV, index=False)


def run(names: list[str], parts: list[str]) -> None:
    import scvi
    from bench_autoencoder import cluster_scores, corrupt, impute_metrics, load

    for name in names:
        adata = load(name)
        labels = adata.obs["cell_type"].astype(str).to_numpy()
        k = len(set(labels))
        base = {
            "dataset": name,
            "cells": adata.n_obs,
            "genes": adata.n_vars,
            "k": k,
            "scvi": scvi.__version__,
        }
        if "cluster" in parts:
            t0, c0 = time.perf_counter(), time.process_time()
            model, epochs = fit_scvi(adata)
            lat = model.get_latent_representation()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rec = {
                **base,
                "part": "cluster",
                "epochs": epochs,
                "wall": wall,
                "cpu": cpu,
                **cluster_scores(lat, labels, k),
            }
            append(rec)
            print(rec, flush=True)
        if "impute" in parts:
            corrupted, r, c, x = corrupt(adata)
            lib = np.asarray(corrupted.X.sum(1)).ravel()
            t0, c0 = time.perf_counter(), time.process_time()
            model, epochs = fit_scvi(corrupted)
            rho = np.asarray(model.get_normalized_expression(library_size=1, return_numpy=True))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            pred = rho[r, c] * lib[r]
            rec = {
                **base,
                "part": "impute",
                "epochs": epochs,
                "wall": wall,
                "cpu": cpu,
                "n_heldout": len(x),
                **impute_metrics(x, pred),
            }
            append(rec)
            print(rec, flush=True)


def fmt(v: float, nd: int = 3) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.{nd}f}"


def report(ae_tag: str) -> str:
    df = pd.read_csv(CSV)
    version = df["scvi"].iloc[0]
    order = [d for d in DATASETS if d in set(df["dataset"])]
    cl = df[df["part"] == "cluster"].set_index("dataset")
    im = df[df["part"] == "impute"].set_index("dataset")
    pca_path, ae_path = (
        OUT / "bench_autoencoder_defaults_pca.csv",
        OUT / "bench_autoencoder_defaults.csv",
    )
    pca = pd.read_csv(pca_path).set_index("dataset") if pca_path.exists() else pd.DataFrame()
    ae = pd.DataFrame()
    if ae_path.exists():
        a = pd.read_csv(ae_path)
        a = a[(a["tag"] == ae_tag) & (a["seed"] == 0)]
        ae = a.set_index("dataset")
    ae_imp_path = OUT / "bench_autoencoder_impute.csv"
    ae_imp = pd.DataFrame()
    if ae_imp_path.exists():
        b = pd.read_csv(ae_imp_path)
        ae_imp = b[b["method"].isin(["AE", "AE unshrunk", "kNN smoothing"])]

    def get(frame: pd.DataFrame, ds: str, col: str) -> float:
        return float(frame.loc[ds, col]) if ds in frame.index and col in frame.columns else np.nan

    lines = [
        "## scvi-tools side by side (issue 4)",
        "",
        "`/work/scvi-venv/bin/python benchmarks/bench_scvi.py [--datasets ...] [--parts cluster "
        f"impute]` (a venv with scvi-tools {version}, torch CPU, 1 thread; `--report` rebuilds "
        f"this section), {time.strftime('%Y-%m-%d')}, {platform.machine()}. scVI defaults "
        "(n_latent 10, n_hidden 128, ZINB, dropout 0.1, batch 128), max_epochs by scVI's rule "
        f"capped at {MAX_STEPS} minibatch steps (as in shared/benchmarks/peers.md); same 2,000 "
        "HVGs and true-k scoring as bench_autoencoder. AE = `DropoutAutoencoder` configuration "
        f"`{ae_tag}` of bench_autoencoder_defaults (seed 0); AE imputation from "
        "bench_autoencoder's impute table (defaults of that run). The 2 CPUs were shared with "
        "other jobs: seconds are inflated and comparable only within a run.",
        "",
        "### Clustering at the true k (ARI; NMI for Ward)",
        "",
        "| dataset | cells | k | scVI epochs | Ward scVI | Ward AE | Ward PCA | Leiden scVI | "
        "Leiden AE | Leiden PCA | KMeans scVI | KMeans AE | KMeans PCA | Ward NMI scVI | "
        "Ward NMI AE | scVI wall s | scVI CPU s | AE CPU s |",
        "|---|---:|---:|---:|" + "---:|" * 15,
    ]
    cols = {m: [] for m in ["s_w", "a_w", "p_w", "s_l", "a_l", "p_l", "s_k", "a_k", "p_k"]}
    for ds in [d for d in order if d in cl.index]:
        vals = {
            "s_w": get(cl, ds, "ward_ari"),
            "a_w": get(ae, ds, "ward_ari"),
            "p_w": get(pca, ds, "ward_ari"),
            "s_l": get(cl, ds, "leiden_ari"),
            "a_l": get(ae, ds, "leiden_ari"),
            "p_l": get(pca, ds, "leiden_ari"),
            "s_k": get(cl, ds, "kmeans_ari"),
            "a_k": get(ae, ds, "kmeans_ari"),
            "p_k": get(pca, ds, "kmeans_ari"),
        }
        for m, v in vals.items():
            cols[m].append(v)
        lines.append(
            f"| {ds} | {cl.loc[ds, 'cells']} | {cl.loc[ds, 'k']} | {cl.loc[ds, 'epochs']} | "
            + " | ".join(fmt(v) for v in vals.values())
            + f" | {fmt(get(cl, ds, 'ward_nmi'))} | {fmt(get(ae, ds, 'ward_nmi'))} | "
            f"{fmt(get(cl, ds, 'wall'), 1)} | {fmt(get(cl, ds, 'cpu'), 1)} | "
            f"{fmt(get(ae, ds, 'cpu'), 1)} |"
        )
    lines.append(
        f"| **mean ({len(cols['s_w'])} sets)** | | | | "
        + " | ".join(fmt(np.mean(v)) for v in cols.values())
        + " | | | | | |"
    )
    lines += [
        "",
        "### Held-out imputation (10% of each cell's non-zeros, seed 0)",
        "",
        "Other rows: bench_autoencoder's impute table as stored now (`AE` = its current model, "
        "`AE unshrunk` where present, kNN smoothing baseline).",
        "",
        "| dataset | held-out | method | median abs. error | mean abs. error | Pearson (log1p) | "
        "Spearman | wall s | CPU s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for ds in [d for d in order if d in im.index]:
        row = im.loc[ds]
        lines.append(
            f"| {ds} | {int(row['n_heldout'])} | scVI | "
            + " | ".join(fmt(row[m]) for m in ["median_ae", "mean_ae", "pearson", "spearman"])
            + f" | {fmt(row['wall'], 1)} | {fmt(row['cpu'], 1)} |"
        )
        if ds in set(ae_imp.get("dataset", [])):
            for _, r in ae_imp[ae_imp["dataset"] == ds].iterrows():
                lines.append(
                    f"| {ds} | {int(r['n_heldout'])} | {r['method']} | "
                    + " | ".join(
                        fmt(r[m]) for m in ["median_ae", "mean_ae", "pearson", "spearman"]
                    )
                    + f" | {fmt(r['seconds'], 1)} | |"
                )
    miss_c = [d for d in DATASETS if d not in cl.index]
    miss_i = [d for d in DATASETS if d not in im.index]
    lines += [
        "",
        "Install: `python3 -m venv /work/scvi-venv && /work/scvi-venv/bin/pip install "
        "torch==2.13.0 && /work/scvi-venv/bin/pip install scvi-tools igraph==1.0.0` "
        f"(scvi-tools {version} resolved the same anndata / scanpy / scikit-learn / numpy versions "
        "as the project's venv). scVI pays Lightning's per-epoch overhead: at 400 epochs even "
        "the 64-cell set takes minutes of wall time on the loaded machine.",
        f"Not run yet (machine time): clustering {', '.join(miss_c) or 'none'}; imputation "
        f"{', '.join(miss_i) or 'none'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=DATASETS)
    parser.add_argument("--parts", nargs="*", default=["cluster", "impute"])
    parser.add_argument("--ae-tag", default="current", help="AE configuration shown alongside")
    parser.add_argument("--report", action="store_true", help="only rebuild the section")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    OUT.mkdir(exist_ok=True)
    if not args.report:
        run(args.datasets, args.parts)
    if not CSV.exists():
        return 0
    body = report(args.ae_tag)
    print(body)
    if not args.no_write:
        write_section("bench_scvi", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
