"""Fidelity of pp.dropout_stats / pp.dropout_genes to M3Drop on real count data.

References, on three small count datasets of ../shared/data:

- the PyPI ``M3Drop`` package 0.5.3 (import name ``M3Drop``). That version is a file-based,
  chunked port of the NBumi model only: ``ComputeBlockA`` (method-of-moments sizes),
  ``ComputeBlockB`` (size-mean trend, expected dropouts) and ``RunModelComparison`` (the
  combined-dropout z-test; its p-values only reach a CSV). It has no ``NBumiFitModel`` /
  ``M3DropFeatureSelection`` functions any more (those were in 0.2.x under ``m3Drop``);
- ``_nbumi_r`` and ``_m3drop_r`` below: dense, literal NumPy transcriptions of R M3Drop's
  ``NBumiFitModel`` + ``NBumiFeatureSelectionCombinedDrop`` and ``M3DropFeatureSelection``,
  i.e. of ALGORITHMS.md §4.1-§4.2 and §3, which our implementation follows.

Where 0.5.3 and R (our spec) disagree, the tests pin the difference on a documented deviation
of 0.5.3 from R (items 1 and 2 are checked below; 3 and 4 show only at the top-k cut):

1. 0.5.3 does not clamp the expected dropout rate at 1/N (R does, with the comment "Is this
   necessary?": ``droprate_exp[droprate_exp < 1/nc] <- 1/nc``). Only genes expected to have
   fewer than one zero are affected. Most have no zero, and their p-value moves from ~1 (R) to
   ~0.5 (0.5.3), harmlessly; but a highly expressed gene with many zeros gets a larger
   observed - expected and a smaller p-value in 0.5.3: on pollen one such gene (16 zeros in 64
   cells, expected < 1) ranks 487th in 0.5.3 and 534th in R and ours, which is the one swap in
   the top 500. The clamp makes the test conservative for such genes; it is R's choice and the
   spec's, so we keep it.
2. 0.5.3 fits the size-mean trend only on genes with mean > 1e-3 and counts the "> 2000 highly
   expressed genes" rule over fit-eligible genes; R uses every gene with 0 < r < max(r). With
   N < 1000 cells every detected gene has mean >= 1/N > 1e-3, so this is invisible here; on
   mouse_bladder / worm_neuron it changes the trend (benchmarks/bench_genes_fidelity.py).
3. When no gene is under-dispersed, R's ``size < max(size)`` drops the gene with the largest
   size from the trend fit; 0.5.3 keeps it (visible on cbmc_citeseq, not on these datasets).
4. 0.5.3 sorts by p-value with pandas' default (unstable) sort; R breaks ties by the larger
   observed - expected rate. We follow R.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import optimize, sparse, stats

import scdropout as sd

pytestmark = pytest.mark.shared

DATASETS = ["cellbench_dropseq", "pollen", "deng"]
TOP = 500


def _nbumi_r(C):
    """R NBumiFitModel + NBumiFeatureSelectionCombinedDrop, dense (ALGORITHMS.md §4.1-§4.2)."""
    C = np.asarray(C, dtype=np.float64)
    n = C.shape[0]
    tj, ti = C.sum(0), C.sum(1)
    total = tj.sum()
    mu = np.outer(ti, tj) / total
    raw = tj**2 * (ti**2).sum() / total**2 / (((C - mu) ** 2).sum(0) - tj)
    size = raw.copy()
    size[size < 0] = 10 * raw.max()
    size[size < 1e-10] = 1e-10
    mean = tj / n
    forfit = (size < size.max()) & (size > 0)
    if (np.log2(mean) > 4).sum() > 2000:
        forfit &= np.log2(mean) > 4
    b1, b0 = np.polyfit(np.log(mean[forfit]), np.log(size[forfit]), 1)
    r = np.exp(b0 + b1 * np.log(mean))
    P = np.exp(-r * np.log1p(mu / r))
    unclamped = P.mean(0)
    expected = np.maximum(unclamped, 1 / n)
    var_e = (P * (1 - P)).sum(0) / n**2
    obs = (C == 0).mean(0)
    pval = stats.norm.sf((obs - expected) / np.sqrt(var_e + obs * (1 - obs) / n))
    order = np.lexsort((expected - obs, pval))
    return {
        "size": size,
        "trend": (b0, b1),
        "expected": expected,
        "unclamped": unclamped,
        "var_e": var_e,
        "observed": obs,
        "pval": pval,
        "order": order,
    }


def _m3drop_r(C):
    """R M3DropFeatureSelection (Michaelis-Menten), dense (ALGORITHMS.md §3)."""
    C = np.asarray(C, dtype=np.float64)
    lib = C.sum(1)
    X = C / lib[:, None] * np.median(lib)
    n = X.shape[0]
    p, s = 1 - (X > 0).mean(0), X.mean(0)
    se_p = np.sqrt(p * (1 - p) / n)
    se_s = np.sqrt(np.maximum((X**2).mean(0) - s**2, 0) / n)
    sse = lambda lk: float(np.sum((p - np.exp(lk) / (np.exp(lk) + s)) ** 2))  # noqa: E731
    grid = np.linspace(np.log(s.min()) - 15, np.log(s.max()) + 15, 241)
    i = int(np.argmin([sse(v) for v in grid]))
    res = optimize.minimize_scalar(
        sse, bounds=(grid[i - 1], grid[i + 1]), method="bounded", options={"xatol": 1e-12}
    )
    K = float(np.exp(res.x))
    p0 = np.where(p == 0, p[p > 0].min() / 2, p)
    kg = p0 * s / (1 - p0)
    se_k = kg * np.sqrt((se_s / s) ** 2 + (se_p / p0) ** 2)
    with np.errstate(divide="ignore"):
        delta = np.abs(np.log(np.maximum(kg - se_k, 1e-100)) - np.log(kg))
    delta[kg - se_k <= 0] = 1e10
    sig_k = np.std(np.log(kg) - np.log(K), ddof=1) / np.sqrt(kg.size)
    pval = stats.norm.sf((np.log(kg) - np.log(K)) / np.sqrt(delta**2 + sig_k**2))
    pval[(p == 0) | np.isnan(pval)] = 1.0
    effect = kg / K
    return {"K": K, "pval": pval, "effect": effect, "order": np.lexsort((-effect, pval))}


def _m3drop_package(adata, tmp: Path):
    """PyPI M3Drop 0.5.3's NBumi pipeline; it only reads .h5ad files."""
    from M3Drop.ComputeBlockCPU import ComputeBlockA, ComputeBlockB
    from M3Drop.FeatureSelectionCPU import RunModelComparison

    path, csv = str(tmp / "counts.h5ad"), str(tmp / "drop.csv")
    ad.AnnData(X=adata.X).write_h5ad(path)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        # numpy warns about log2(where=) without out= inside ComputeBlockB; not ours
        warnings.simplefilter("ignore")
        a = ComputeBlockA(path, calc_djs=True)
        b = ComputeBlockB(path, a)
        names = np.arange(adata.n_vars).astype(str)[b["mask"]]
        RunModelComparison(path, b, filtered_gene_names=names, combined_drop_csv=csv)
    table = pd.read_csv(csv, dtype={"Gene": str}).set_index("Gene")
    assert b["mask"].all()  # we pass detected genes only, so indices line up
    return {
        "size": b["sizes"],
        "trend": tuple(b["regression_coeffs"]),
        "expected": b["expected_dropouts"] / b["nc"],
        "pval": table["p.value"].reindex(names).to_numpy(),
        "ranked": table.index.to_numpy().astype(int),
    }


def _jaccard(a, b):
    a, b = set(a), set(b)
    return len(a & b) / len(a | b)


@pytest.fixture(scope="module", params=DATASETS)
def case(request, shared, tmp_path_factory):
    a = ad.read_h5ad(shared / "data" / f"{request.param}.h5ad")
    a = a[:, np.asarray(a.X.sum(axis=0)).ravel() > 0].copy()
    a.X = sparse.csr_matrix(a.X, dtype=np.float32)
    ours = ad.AnnData(X=a.X.copy(), var=pd.DataFrame(index=a.var_names))
    sd.pp.dropout_stats(ours)
    sd.pp.dropout_genes(ours, flavor="nbumi", n_top_genes=TOP)
    sd.pp.dropout_genes(ours, flavor="m3drop", n_top_genes=TOP, key_added="mm")
    dense = a.X.toarray()
    return {
        "name": request.param,
        "n": a.n_obs,
        "ours": ours,
        "pkg": _m3drop_package(a, tmp_path_factory.mktemp(request.param)),
        "nbr": _nbumi_r(dense),
        "mmr": _m3drop_r(dense),
    }


def _stats(case):
    return sd.get.dropout_stats(case["ours"])


def test_nb_sizes_match_package_and_r(case):
    size = _stats(case)["nb_size"].to_numpy()
    np.testing.assert_allclose(size, case["pkg"]["size"], rtol=1e-9)
    np.testing.assert_allclose(size, case["nbr"]["size"], rtol=1e-9)


def test_size_trend_matches_package_and_r(case):
    fit = case["ours"].uns["dropout"]["nbumi"]
    ours = (fit["trend_intercept"], fit["trend_slope"])
    np.testing.assert_allclose(ours, case["pkg"]["trend"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours, case["nbr"]["trend"], rtol=1e-9, atol=1e-12)


def test_expected_rate_matches_r_and_package_up_to_the_clamp(case):
    expected = _stats(case)["expected"].to_numpy()
    np.testing.assert_allclose(expected, case["nbr"]["expected"], rtol=1e-9, atol=1e-14)
    # M3Drop 0.5.3 does not clamp at 1/N (deviation 1): equal above it, 1/N vs less below it
    pkg, n = case["pkg"]["expected"], case["n"]
    above = pkg >= 1 / n
    assert (~above).sum() > 0  # every dataset here has such genes
    np.testing.assert_allclose(expected[above], pkg[above], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(expected[~above], 1 / n, rtol=1e-12)
    assert np.max(np.abs(expected - pkg)) <= 1 / n


def test_nbumi_pvalues_match_r(case):
    p = sd.get.dropout_genes(case["ours"]).reindex(case["ours"].var_names)["pval"].to_numpy()
    ref = case["nbr"]["pval"]
    np.testing.assert_allclose(p, ref, rtol=1e-6, atol=1e-300)


def test_nbumi_pvalues_agree_with_package(case):
    p = sd.get.dropout_genes(case["ours"]).reindex(case["ours"].var_names)["pval"].to_numpy()
    pkg = case["pkg"]["pval"]
    # identical wherever the 1/N clamp does not bite
    above = case["pkg"]["expected"] >= 1 / case["n"]
    np.testing.assert_allclose(p[above], pkg[above], rtol=1e-6, atol=1e-300)
    assert stats.spearmanr(p, pkg).statistic >= 0.99  # measured 0.9907 .. 0.9985


def test_nbumi_top_genes(case):
    table = sd.get.dropout_genes(case["ours"])
    ours = table.index[:TOP]
    names = np.asarray(case["ours"].var_names)
    ref = case["nbr"]["order"][:TOP]
    assert set(ours) == set(names[ref])
    # same order as R up to exact ties: the p-values down the two rankings agree
    np.testing.assert_allclose(
        table["pval"].to_numpy()[:TOP], case["nbr"]["pval"][ref], rtol=1e-6, atol=1e-300
    )
    assert table["selected"].sum() == TOP
    # M3Drop 0.5.3: measured 1.0 (dropseq, deng), 0.996 (pollen: one swap at the cut)
    assert _jaccard(ours, names[case["pkg"]["ranked"][:TOP]]) >= 0.99


def test_m3drop_flavor_matches_r(case):
    mm = case["ours"].uns["mm"]
    ref = case["mmr"]
    table = sd.get.dropout_genes(case["ours"], key="mm").reindex(case["ours"].var_names)
    np.testing.assert_allclose(case["ours"].uns["dropout"]["m3drop"]["K"], ref["K"], rtol=1e-6)
    np.testing.assert_allclose(table["pval"].to_numpy(), ref["pval"], rtol=1e-5, atol=1e-300)
    np.testing.assert_allclose(table["effect"].to_numpy(), ref["effect"], rtol=1e-6)
    top = sd.get.dropout_genes(case["ours"], key="mm").index[:TOP]
    names = np.asarray(case["ours"].var_names)
    assert _jaccard(top, names[ref["order"][:TOP]]) >= 0.99
    assert mm["n_selected"] == TOP


def test_trend_difference_on_large_data_is_the_package_filter(shared, tmp_path):
    """On mouse_bladder (2,100 cells) 0.5.3's trend differs from R's; deviation 2 explains it.

    Refitting the trend on our sizes with 0.5.3's gene filter (mean > 1e-3, positive finite
    size, the > 2000 rule counted over those) reproduces 0.5.3's coefficients, and R's filter
    reproduces ours. Which fits better is data-dependent (sum |observed - expected| over genes:
    mouse_bladder 91 with R's rule vs 97 with 0.5.3's; worm_neuron 52 vs 43), so this is a
    deviation of 0.5.3 from R, not a bug on either side; we follow R and ALGORITHMS.md §4.1.
    """
    a = ad.read_h5ad(shared / "data" / "mouse_bladder.h5ad")
    a = a[:, np.asarray(a.X.sum(axis=0)).ravel() > 0].copy()
    ours = ad.AnnData(X=a.X.copy())
    sd.pp.dropout_stats(ours)
    pkg = _m3drop_package(a, tmp_path)
    st = sd.get.dropout_stats(ours)
    size, mean = st["nb_size"].to_numpy(), st["mean"].to_numpy()
    np.testing.assert_allclose(size, pkg["size"], rtol=1e-9)

    def refit(use, *, count_over_use):
        high = np.log2(mean) > 4
        if (high & use if count_over_use else high).sum() > 2000:
            use = use & high
        b1, b0 = np.polyfit(np.log(mean[use]), np.log(size[use]), 1)
        return b0, b1

    clamped = size == size.max()  # under-dispersed genes get 10 x max(size): the maximum
    assert clamped.sum() > 1
    r_fit = refit((size < size.max()) & (size > 0), count_over_use=False)
    pkg_fit = refit(~clamped & (size > 0) & (mean > 1e-3), count_over_use=True)
    fit = ours.uns["dropout"]["nbumi"]
    np.testing.assert_allclose(r_fit, (fit["trend_intercept"], fit["trend_slope"]), rtol=1e-9)
    np.testing.assert_allclose(pkg_fit, pkg["trend"], rtol=1e-9)
    assert abs(fit["trend_slope"] - pkg["trend"][1]) > 0.1  # a real difference, not noise
