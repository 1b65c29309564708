"""Which CIDR-style variant clusters best across the 12 labelled datasets (automatic k)?

Per dataset (input as R got it, see ``bench_cidr.py``; cbmc_citeseq from ``shared/data``):

1. once: log2(TPM + 1) of all genes, per-cell dropout thresholds and the weighting threshold W
   (``kernels.cidr``; identical to ``tl.cidr(flavor="r")``), and the gene ranks of
   ``tl._cidr_flavors.dropout_gene_ranks`` (``m3drop`` on every input; ``nbumi`` on the count
   datasets, where the non-count ones fall back to ``m3drop``);
2. per gene set (``all``, top 1000 / 2000 by ``m3drop`` or ``nbumi``; the first run also had
   500) and W mode: ``cidrW`` = CIDR's dissimilarity on those genes with the all-gene
   thresholds and W, then its leading 20 principal coordinates (``pcoa_top``); ``noimp`` =
   W = 0 (Euclidean on log2 TPM), whose coordinates are the principal components
   (``pca_top``; not for all genes above 5,000). For ``all``/``cidrW`` also the exact R
   pipeline (full PCoA, ``calc_npc``, Ward + CH): ``r`` = ``tl.cidr(flavor="r")`` and
   ``r_truek`` (skipped on cbmc_citeseq, 8,617 cells, where R timed out);
3. per number of coordinates d in {10, 20} and clustering (``ward``: Ward + CIDR's CH rule
   over k <= 3d+3; ``leiden0.5`` / ``leiden1``: exact 15-NN graph + Leiden, seed 0): labels,
   plus ``ward_truek`` (tree cut at the true k).

Variant names: ``<genes>/<W>/<d>/<clustering>``, e.g. ``m3drop1000/noimp/20/leiden0.5``. Every k is chosen
without the labels. ARI and NMI against the published labels; the panel mean is over all 12
datasets and, separately, over the 8 count datasets (count = integer input). The expensive
steps are cached in ``benchmarks/_out/cidr_quality/`` (``--recompute`` ignores the cache).
Writes the ``bench_cidr_quality`` section of ``benchmarks/RESULTS.md``. Run:
``.venv/bin/python benchmarks/bench_cidr_quality.py`` (``--datasets ...``, ``--no-write``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from scdropout.kernels import cidr as kc
from scdropout.tl._cidr_flavors import cluster_coordinates, dropout_gene_ranks, pca_top, pcoa_top

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cidr import NON_INTEGER, SHARED, load_input, markdown_table, write_section

OUT = Path(__file__).resolve().parent / "_out" / "cidr_quality"
DATASETS = [
    "buettner_mesc",
    "cbmc_citeseq",
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
]
GENE_SETS = ["all"] + [f"{m}{n}" for m in ("m3drop", "nbumi") for n in (1000, 2000)]
W_MODES = ("cidrW", "noimp")
DIMS = (10, 20)
CLUSTERINGS = ("ward", "leiden0.5", "leiden1")
N_COORDS = 20


def _scores(truth: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
        "k": len(np.unique(labels)),
    }


def _cluster(Y: np.ndarray, how: str) -> np.ndarray:
    if how == "ward":
        return cluster_coordinates(Y, method="ward_ch")
    return cluster_coordinates(Y, method="leiden", resolution=float(how.removeprefix("leiden")))


def _base(name: str, shared: Path) -> tuple:
    """Input, log TPM, thresholds, W and gene ranks of one dataset (ranks and T/W cached)."""
    a = load_input(name, shared)
    counts = name not in NON_INTEGER
    ld = kc.log_tpm(a.X, tag_type="raw")
    cache = OUT / f"{name}__base.npz"
    if cache.exists():
        z = np.load(cache)
        return a, counts, ld, z["thr"], float(z["w"]), {"m3drop": z["m3drop"], "nbumi": z["nbumi"]}
    t0 = time.perf_counter()
    th = kc.dropout_thresholds(ld.X, ld.library_size)
    fit = kc.weighting_threshold(ld.X, th.thresholds)
    t_base = time.perf_counter() - t0
    raw = a.X[:, ld.kept_genes]
    ranks = {
        m: dropout_gene_ranks(raw, method=m if counts else "m3drop") for m in ("m3drop", "nbumi")
    }
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, thr=th.thresholds, w=fit.threshold, t_base=t_base, **ranks)
    return a, counts, ld, th.thresholds, float(fit.threshold), ranks


def _legacy(name: str) -> list[dict]:
    """Rows of the first run (CIDR W only, variant names without the W part)."""
    path = OUT / f"{name}.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        parts = r["variant"].split("/")
        if len(parts) == 3:
            r["variant"] = "/".join([parts[0], "cidrW", *parts[1:]])
    return rows


def run(name: str, shared: Path, *, recompute: bool) -> list[dict]:
    rows = [] if recompute else _legacy(name)
    have = {r["variant"] for r in rows}
    a, counts, ld, thr, w, ranks = _base(name, shared)
    truth = a.obs["cell_type"].astype(str).to_numpy()
    k_true = len(np.unique(truth))
    g = ld.X.shape[1]
    common = {"dataset": name, "cells": a.n_obs, "genes": g, "count": counts, "k_true": k_true}
    done: dict[tuple, list[dict]] = {}
    for gs in GENE_SETS:
        if gs == "all":
            used = np.arange(g)
        else:
            method = gs.rstrip("0123456789")
            used = np.flatnonzero(ranks[method] <= int(gs[len(method) :]))
        for wmode in W_MODES:
            if wmode == "noimp" and used.size > 5000:
                continue  # dense SVD of all genes: not a candidate default
            prefix = f"{gs}/{wmode}/"
            if any(v.startswith(prefix) for v in have):
                continue
            cache = OUT / f"{name}__{gs}__{wmode}.jsonl"
            key = (used.size, int(used.sum()), wmode)
            if cache.exists() and not recompute:
                new = [json.loads(line) for line in cache.read_text().splitlines()]
            elif key in done:  # same genes as an earlier set (cbmc_citeseq has 500 genes)
                new = [
                    {**r, "variant": prefix + r["variant"].split("/", 2)[2]}
                    for r in done[key]
                    if not r["variant"].startswith("r")
                ]
            else:
                new = _stage(a, ld, thr, w, used, wmode, prefix, common, truth, k_true, gs)
                OUT.mkdir(parents=True, exist_ok=True)
                cache.write_text("\n".join(json.dumps(r) for r in new) + "\n")
            done[key] = [r for r in new if r["variant"].startswith(prefix)]
            rows += new
    return rows


def _stage(a, ld, thr, w, used, wmode, prefix, common, truth, k_true, gs) -> list[dict]:
    rows = []
    t0 = time.perf_counter()
    m = min(N_COORDS, a.n_obs - 1)
    if wmode == "cidrW":
        D = kc.dissimilarity(ld.X[:, used], thr, w)
        _, Y = pcoa_top(D, m, random_state=0)
    else:
        D = None
        _, Y = pca_top(ld.X[:, used], m)
    t_emb = time.perf_counter() - t0
    if gs == "all" and wmode == "cidrW" and a.n_obs <= 5000:
        # the exact R pipeline on the same matrix = tl.cidr(flavor="r"); R itself timed out on
        # cbmc_citeseq (8,617 cells) and so would its O(N^3) full eigendecomposition here
        t0 = time.perf_counter()
        eig = kc.pcoa(D, n_components=None if a.n_obs <= 1500 else N_COORDS, random_state=0)
        npc = kc.calc_npc(eig.variation)
        eig = kc.pcoa(D, n_components=npc, random_state=0) if a.n_obs > 1500 else eig
        Yr = eig.coordinates[:, :npc]
        lab = kc.ward_clusters(Yr).labels
        t_r = time.perf_counter() - t0 + t_emb
        rows.append({**common, "variant": "r", **_scores(truth, lab), "seconds": t_r})
        lab = kc.ward_clusters(Yr, n_clusters=k_true).labels
        rows.append({**common, "variant": "r_truek", **_scores(truth, lab), "seconds": t_r})
    del D
    for d in DIMS:
        Yd = Y[:, :d]
        for how in CLUSTERINGS:
            t0 = time.perf_counter()
            lab = _cluster(Yd, how)
            sec = t_emb + time.perf_counter() - t0
            rows.append(
                {**common, "variant": f"{prefix}{d}/{how}", **_scores(truth, lab), "seconds": sec}
            )
        lab = cluster_coordinates(Yd, method="ward_ch", n_clusters=k_true)
        rows.append({**common, "variant": f"{prefix}{d}/ward_truek", **_scores(truth, lab)})
    print(f"  {common['dataset']} {prefix}: {used.size} genes, embedding {t_emb:.1f}s", flush=True)
    return rows


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean ARI/NMI per variant; variants run on every dataset first (sorted), then ``r*``."""
    auto = df[~df["variant"].str.contains("truek")]
    g = auto.groupby("variant")
    n_all = df["dataset"].nunique()
    summary = pd.DataFrame(
        {
            "datasets": g["ari"].count(),
            "ARI mean": g["ari"].mean(),
            "ARI mean (counts)": auto[auto["count"]].groupby("variant")["ari"].mean(),
            "ARI mean (non-counts)": auto[~auto["count"]].groupby("variant")["ari"].mean(),
            "NMI mean": g["nmi"].mean(),
            "ARI min": g["ari"].min(),
            "seconds (sum)": g["seconds"].sum(),
        }
    )
    full = summary[summary["datasets"] == n_all].sort_values("ARI mean", ascending=False)
    truek = df[df["variant"].str.contains("truek")].groupby("variant")
    refs = summary.loc[[v for v in ("r",) if v in summary.index]]
    tk = pd.DataFrame(
        {
            "datasets": truek["ari"].count(),
            "ARI mean": truek["ari"].mean(),
            "NMI mean": truek["nmi"].mean(),
        }
    )
    tk = tk.loc[
        [v for v in ("r_truek", f"{full.index[0].rsplit('/', 1)[0]}/ward_truek") if v in tk.index]
    ]
    return pd.concat([full, refs, tk])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="*", default=DATASETS)
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--recompute", action="store_true")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--show", nargs="*", default=None, help="variants in the per-dataset tables")
    args = p.parse_args(argv)
    logging.getLogger("scdropout").setLevel(logging.WARNING)
    rows = []
    for name in args.datasets:
        t0 = time.perf_counter()
        rows += run(name, args.shared, recompute=args.recompute)
        print(f"{name}: {time.perf_counter() - t0:.1f}s", flush=True)
    df = pd.DataFrame(rows)
    summary = summarise(df)
    print(markdown_table(summary.reset_index()))
    if args.no_write:
        return 0
    full = [v for v in summary.index if "/" in v and "truek" not in v]
    best_imputing = next(v for v in full if "/cidrW/" in v)
    winner_truek = f"{full[0].rsplit('/', 1)[0]}/ward_truek"
    show = args.show or [*full[:3], best_imputing, winner_truek, "r", "r_truek"]
    text = report(df, summary, show)
    write_section("bench_cidr_quality", text)
    return 0


def report(df: pd.DataFrame, summary: pd.DataFrame, show: list[str]) -> str:
    """The RESULTS.md section (filled in by hand-picked ``show`` variants)."""
    per = df[df["variant"].isin(show)]
    cells = per.assign(
        val=[f"{a:.3f} / {n:.3f} (k={k})" for a, n, k in zip(per.ari, per.nmi, per.k, strict=True)]
    )
    wide = cells.pivot(index="dataset", columns="variant", values="val")[show]
    info = df.groupby("dataset")[["cells", "genes", "k_true", "count"]].first()
    wide = info.join(wide).reset_index()
    return "\n".join(
        [
            "### CIDR variants on the 12 labelled datasets (automatic k unless `truek`)",
            "",
            "Command: `.venv/bin/python benchmarks/bench_cidr_quality.py` (expensive steps cached "
            "in `benchmarks/_out/cidr_quality/`, `--recompute` to redo; ~1 h from scratch on the "
            "loaded 2-core machine). Variant `<genes>/<W>/<coords>/<clustering>`: genes = all or "
            "the top N by `dropout_gene_ranks` (`m3drop`/`nbumi`; non-count inputs always "
            "`m3drop`); W = `cidrW`: CIDR's implicit-imputation dissimilarity on those genes "
            "with the all-gene thresholds and W, then PCoA; `noimp`: W = 0, i.e. Euclidean "
            "distances of the log2(TPM + 1) rows = PCA of the selected columns; leading 10 or "
            "20 coordinates; Ward + CIDR's CH rule, or Leiden (exact 15-NN, resolution 0.5/1, "
            "seed 0). k is always chosen without labels except in `*truek` rows. `r` = "
            "`tl.cidr(flavor='r')` (not run on cbmc_citeseq: its O(N^3) eigendecomposition, "
            "where R timed out). Seconds: sums of single runs on the shared 2-core machine at "
            "load 8-22 (noisy upper bounds). Counts = the 8 integer inputs. Peers "
            "(shared/benchmarks/peers.md): best on all 12 = t-SNE+KMeans 0.53 (true k), scVI "
            "0.62 on the 8 count sets, per-dataset best 0.71. Single Leiden runs: differences "
            "of a few hundredths between variants are within seed noise.",
            "",
            f"Winner (default flavor candidate): `{summary.index[0]}`, mean ARI "
            f"{summary['ARI mean'].iloc[0]:.3f} over 12 datasets, "
            f"{summary['ARI mean (counts)'].iloc[0]:.3f} over the 8 count sets. CIDR's "
            "implicit imputation (`cidrW`) loses on the large UMI sets (mouse_bladder, "
            "worm_neuron) even on selected genes; it wins only where genes are few "
            "(cbmc_citeseq) or on the small plate sets.",
            "",
            "All variants, sorted by mean ARI over the 12 datasets:",
            "",
            markdown_table(summary.reset_index()),
            "",
            "Per dataset: ARI / NMI (k found):",
            "",
            markdown_table(wide),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
