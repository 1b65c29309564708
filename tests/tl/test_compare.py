"""sd.tl.compare_clusterings: the table, quality, side effects, determinism, errors, skips."""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from anndata.tests.helpers import assert_equal
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

import scdropout as sd
from scdropout.tl import _compare

METHODS = ("pca", "tsne", "cidr", "dae")
RULES = ("ward", "leiden")
FAST = {"dae": {"max_epochs": 3, "n_latent": 5}, "tsne": {"max_iter": 500}}
RUN = {
    "labels_key": "group",
    "n_pcs": 10,
    "method_kwargs": FAST,
    "n_jobs": 1,
    "progress_bar": False,
}
COLUMNS = [
    "status",
    "n_clusters_ward",
    "n_clusters_leiden",
    "ari_ward",
    "ari_leiden",
    "nmi_ward",
    "nmi_leiden",
    "silhouette_ward",
    "silhouette_leiden",
    "mean_agreement",
    "seconds",
    "peak_memory_mb",
]


def _keys_written(key: str, methods=METHODS, rules=RULES) -> dict[str, set[str]]:
    return {
        "obsm": {f"X_{key}_{m}" for m in methods},
        "obs": {f"{key}_{m}_{r}" for m in methods for r in rules},
        "uns": {key, *(f"{key}_{m}" for m in methods if m in ("cidr", "dae"))},
    }


@pytest.fixture(scope="module")
def small(_synthetic_cached):
    """150 cells x 500 genes of the shared synthetic data, 3 planted groups."""
    return _synthetic_cached[:150].copy()


@pytest.fixture(scope="module")
def done(small):
    """One full comparison (all methods, both rules), then a second under another key."""
    adata = small.copy()
    table = sd.tl.compare_clusterings(adata, **RUN)
    again = sd.tl.compare_clusterings(adata, key_added="again", **RUN)
    return adata, table, again


def test_table(done):
    _, table, _ = done
    assert list(table.index) == list(METHODS)
    assert table.index.name == "method"
    assert list(table.columns) == COLUMNS
    assert (table["status"] == "ok").all()
    # k of Ward comes from the labels: 3 planted groups
    assert (table["n_clusters_ward"] == 3).all()
    assert table["n_clusters_ward"].dtype == "Int64"
    assert (table["n_clusters_leiden"] >= 2).all()
    for col in COLUMNS[3:]:
        assert table[col].dtype == np.float64
        assert np.isfinite(table[col]).all(), col
    assert (table["seconds"] > 0).all()
    assert (table["peak_memory_mb"] >= 0).all()
    assert ((table[["ari_ward", "nmi_ward"]] <= 1 + 1e-12).all()).all()


def test_quality_floors(done, small):
    # measured (150 cells, n_pcs=10, 2026-11-30): pca 0.84, tsne 0.98 (Ward ARI)
    _, table, _ = done
    assert table.loc["pca", "ari_ward"] > 0.7
    assert table.loc["tsne", "ari_ward"] > 0.8
    # leiden on PCA: measured 0.83
    assert table.loc["pca", "ari_leiden"] > 0.6
    # cidr: the default flavor ("dropout": PCA of the top dropout genes, no imputation) does
    # not separate this simulator's groups (measured Ward ARI 0.03: its heavy simulated
    # dropouts dominate plain Euclidean distances; the flavor was chosen on the 12 real
    # datasets, benchmarks/RESULTS.md bench_cidr_quality); CIDR's imputation does (R
    # flavor measured 0.94)
    assert np.isfinite(table.loc["cidr", "ari_ward"])
    t = sd.tl.compare_clusterings(
        small.copy(),
        methods=("cidr",),
        rules="ward",
        method_kwargs={"cidr": {"flavor": "r"}},
        **{k: v for k, v in RUN.items() if k != "method_kwargs"},
    )
    assert t.loc["cidr", "ari_ward"] > 0.8


def test_scores_match_stored_labels(done):
    adata, table, _ = done
    truth = adata.obs["group"].astype(str)
    for m in METHODS:
        emb = adata.obsm[f"X_compare_{m}"]
        for r in RULES:
            lab = adata.obs[f"compare_{m}_{r}"]
            assert isinstance(lab.dtype, pd.CategoricalDtype)
            k = table.loc[m, f"n_clusters_{r}"]
            assert list(lab.cat.categories) == [str(i) for i in range(k)]
            # numbered by decreasing size
            sizes = lab.value_counts(sort=False).to_numpy()
            assert (np.diff(sizes) <= 0).all()
            assert table.loc[m, f"ari_{r}"] == pytest.approx(adjusted_rand_score(truth, lab))
            assert table.loc[m, f"nmi_{r}"] == pytest.approx(
                normalized_mutual_info_score(truth, lab)
            )
            assert table.loc[m, f"silhouette_{r}"] == pytest.approx(silhouette_score(emb, lab))
    agree = adata.uns["compare"]["agreement"]
    assert set(agree) == set(RULES)
    for r in RULES:
        mat = agree[r]
        assert mat.shape == (4, 4)
        assert_allclose(mat, mat.T)
        assert_allclose(np.diag(mat), 1.0)
        assert mat[0, 2] == pytest.approx(
            adjusted_rand_score(adata.obs[f"compare_pca_{r}"], adata.obs[f"compare_cidr_{r}"])
        )
    off = ~np.eye(4, dtype=bool)
    expected = [np.mean([agree[r][i][off[i]] for r in RULES]) for i in range(4)]
    assert_allclose(table["mean_agreement"], expected)


def test_embeddings(done, small):
    adata, _, _ = done
    assert adata.obsm["X_compare_tsne"].shape == (150, 2)
    assert adata.obsm["X_compare_pca"].shape == (150, 10)
    assert adata.obsm["X_compare_dae"].shape == (150, 5)
    # "cidr" is exactly what sd.tl.cidr clusters on, with the same seed
    ref = sd.tl.cidr(small, progress_bar=False, n_jobs=1, copy=True)
    npc = ref.uns["cidr"]["n_pcs"]
    assert_allclose(adata.obsm["X_compare_cidr"], ref.obsm["X_cidr"][:, :npc])
    # "pca" against an independent computation: log1p(CP10k), scale, clip 10, SVD
    X = small.X.toarray().astype(np.float64)
    Y = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    Y = (Y - Y.mean(0)) / np.where(Y.std(0, ddof=1) > 0, Y.std(0, ddof=1), 1.0)
    Y = np.clip(Y, -10, 10)
    u, s, _ = np.linalg.svd(Y - Y.mean(0), full_matrices=False)
    assert_allclose(np.abs(adata.obsm["X_compare_pca"]), np.abs(u[:, :10] * s[:10]), atol=1e-6)


def test_written_keys_params_and_key_added(done, small):
    adata, _, _ = done
    before = _keys_written("compare")
    again = _keys_written("again")
    assert set(adata.obsm) == before["obsm"] | again["obsm"]
    assert set(adata.obs.columns) - set(small.obs.columns) == before["obs"] | again["obs"]
    assert set(adata.uns) - set(small.uns) == before["uns"] | again["uns"] | {"scdropout"}
    assert set(adata.var.columns) == set(small.var.columns)
    assert set(adata.layers) == set(small.layers)
    assert_equal(adata.X, small.X)
    written = adata.uns["scdropout"]["written"]
    assert written["obs"]["compare_pca_ward"] == "compare_clusterings"
    assert written["uns"]["again"] == "compare_clusterings"
    u = adata.uns["compare"]
    assert set(u) == {
        "params",
        "table",
        "agreement",
        "skipped",
        "methods",
        "rules",
        "rules_skipped",
    }
    assert u["skipped"] == {}
    assert list(u["methods"]) == list(METHODS)
    expected = set(inspect.signature(sd.tl.compare_clusterings).parameters) - {"adata"}
    assert expected <= set(u["params"])
    assert u["params"]["random_state"] == 0
    assert u["params"]["labels_key"] == "group"
    assert u["params"]["n_clusters"] == "None"
    assert u["params"]["method_kwargs"]["dae"]["max_epochs"] == 3
    assert adata.uns["again"]["params"]["key_added"] == "again"
    # the methods' own records: what tl.cidr / tl.autoencoder stored for the same run
    assert written["uns"]["compare_dae"] == "compare_clusterings"
    assert adata.uns["compare_dae"]["params"]["max_epochs"] == 3
    assert len(adata.uns["compare_dae"]["history"]["train_loss"]) == 3
    npc = adata.uns["compare_cidr"]["n_pcs"]
    assert adata.obsm["X_compare_cidr"].shape[1] == npc


def test_same_seed_same_result(done):
    adata, table, again = done
    for m in METHODS:
        assert_array_equal(adata.obsm[f"X_compare_{m}"], adata.obsm[f"X_again_{m}"])
        for r in RULES:
            assert_array_equal(adata.obs[f"compare_{m}_{r}"], adata.obs[f"again_{m}_{r}"])
    cols = [c for c in COLUMNS if c not in {"seconds", "peak_memory_mb"}]
    pd.testing.assert_frame_equal(table[cols], again[cols])


def test_returned_table_is_a_copy_and_get_round_trip(done):
    adata, table, _ = done
    stored = sd.get.comparison(adata)
    pd.testing.assert_frame_equal(stored, table)
    table.loc["pca", "ari_ward"] = -5.0
    assert sd.get.comparison(adata).loc["pca", "ari_ward"] != -5.0
    table.loc["pca", "ari_ward"] = stored.loc["pca", "ari_ward"]


def test_h5ad_round_trip(done, tmp_path):
    adata, table, _ = done
    path = tmp_path / "cmp.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    pd.testing.assert_frame_equal(sd.get.comparison(back), table)
    for m in METHODS:
        assert_array_equal(back.obsm[f"X_compare_{m}"], adata.obsm[f"X_compare_{m}"])
        assert_array_equal(back.obs[f"compare_{m}_ward"], adata.obs[f"compare_{m}_ward"])
    for r in RULES:
        assert_array_equal(
            back.uns["compare"]["agreement"][r], adata.uns["compare"]["agreement"][r]
        )


def test_rerun_overwrites_own_keys_only(synthetic):
    a = synthetic[:40].copy()
    kw = {"methods": "pca", "rules": "ward", "progress_bar": False, "n_jobs": 1}
    sd.tl.compare_clusterings(a, n_clusters=2, **kw)
    t = sd.tl.compare_clusterings(a, n_clusters=4, **kw)
    assert t.loc["pca", "n_clusters_ward"] == 4
    assert a.obs["compare_pca_ward"].cat.categories.size == 4
    sd.tl.cidr(a, progress_bar=False, key_added="mine")
    with pytest.raises(ValueError, match="key_added"):
        sd.tl.compare_clusterings(a, key_added="mine", **kw)  # uns['mine'] is cidr's
    assert "X_mine_pca" not in a.obsm


def test_rerun_with_fewer_methods_removes_the_others_results(synthetic):
    a = synthetic[:40].copy()
    kw = {"rules": "ward", "n_clusters": 2, "n_pcs": 5, "progress_bar": False, "n_jobs": 1}
    sd.tl.compare_clusterings(a, methods=("pca", "cidr"), **kw)
    assert {"X_compare_cidr", "X_compare_pca"} <= set(a.obsm)
    assert "compare_cidr" in a.uns
    sd.tl.compare_clusterings(a, methods="pca", **kw)
    assert "X_compare_cidr" not in a.obsm
    assert "compare_cidr_ward" not in a.obs
    assert "compare_cidr" not in a.uns
    assert list(a.uns["compare"]["methods"]) == ["pca"]


def test_without_labels_chooses_k_and_has_nan_scores(synthetic):
    a = synthetic[:60].copy()
    t = sd.tl.compare_clusterings(
        a,
        methods=("pca", "cidr"),
        rules="ward",
        n_pcs=10,
        progress_bar=False,
        n_jobs=1,
        method_kwargs={"cidr": {"flavor": "r"}},  # CIDR's imputation finds the planted groups
    )
    assert list(t.columns) == [
        "status",
        "n_clusters_ward",
        "ari_ward",
        "nmi_ward",
        "silhouette_ward",
        "mean_agreement",
        "seconds",
        "peak_memory_mb",
    ]
    assert t[["ari_ward", "nmi_ward"]].isna().all().all()
    # k maximises Calinski-Harabasz over 2..20 on each embedding
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import calinski_harabasz_score

    for m in ("pca", "cidr"):
        emb = a.obsm[f"X_compare_{m}"]
        Z = linkage(emb, "ward")
        ch = [calinski_harabasz_score(emb, fcluster(Z, k, "maxclust")) for k in range(2, 21)]
        assert t.loc[m, "n_clusters_ward"] == 2 + int(np.argmax(ch))
    assert t.loc["cidr", "n_clusters_ward"] == 3  # the planted groups
    assert np.isfinite(t["mean_agreement"]).all()


def test_generator_seed_and_genes(synthetic):
    a = synthetic[:40].copy()
    a.var["use"] = np.arange(a.n_vars) < 100
    t = sd.tl.compare_clusterings(
        a,
        methods="pca",
        rules="ward",
        genes="use",
        random_state=np.random.default_rng(3),
        progress_bar=False,
        n_jobs=1,
    )
    assert t.loc["pca", "status"] == "ok"
    p = a.uns["compare"]["params"]
    assert p["random_state"] == "Generator"
    assert p["genes"] == "use"
    assert isinstance(p["seed_used"], int)
    # only the 100 selected genes are used: equal to running on that subset
    b = synthetic[:40, :100].copy()
    sd.tl.compare_clusterings(
        b, methods="pca", rules="ward", random_state=p["seed_used"], progress_bar=False, n_jobs=1
    )
    assert_allclose(a.obsm["X_compare_pca"], b.obsm["X_compare_pca"])


# ---------------------------------------------------------------------------- skip paths


def test_too_few_cells_skips_with_warning():
    rng = np.random.default_rng(0)
    a = ad.AnnData(sparse.csr_matrix(rng.poisson(3.0, size=(4, 30)).astype(np.float32) + 1.0))
    with pytest.warns(UserWarning, match="is skipped: too few cells") as rec:
        t = sd.tl.compare_clusterings(
            a, methods=("pca", "tsne", "dae"), rules="ward", progress_bar=False, n_jobs=1
        )
    messages = [str(w.message) for w in rec]
    assert messages == [
        "compare_clusterings: 'tsne' is skipped: too few cells (4 < 5).",
        "compare_clusterings: 'dae' is skipped: too few cells (4 < 20).",
    ]
    assert all(w.filename == __file__ for w in rec)  # attributed to the caller
    assert t.loc["pca", "status"] == "ok"
    assert t.loc["tsne", "status"] == "skipped: too few cells (4 < 5)"
    assert t.loc["dae", "status"].startswith("skipped: too few cells")
    assert t.loc[["tsne", "dae"], ["ari_ward", "silhouette_ward", "seconds"]].isna().all().all()
    assert t.loc[["tsne", "dae"], "n_clusters_ward"].isna().all()
    assert np.isnan(t.loc["pca", "mean_agreement"])  # no other method to agree with
    assert set(a.obsm) == {"X_compare_pca"}
    assert set(a.uns["compare"]["skipped"]) == {"tsne", "dae"}
    mat = a.uns["compare"]["agreement"]["ward"]
    assert mat[0, 0] == 1.0
    assert np.isnan(mat[1:]).all()


def test_runtime_error_skips_method(synthetic, monkeypatch):
    import scdropout.tl._autoencoder as ae

    def boom(*args, **kwargs):
        msg = "loss became NaN at epoch 1"
        raise RuntimeError(msg)

    monkeypatch.setattr(ae, "autoencoder", boom)
    a = synthetic[:40].copy()
    with pytest.warns(UserWarning, match="'dae' is skipped: RuntimeError: loss became NaN"):
        t = sd.tl.compare_clusterings(
            a, methods=("pca", "dae"), rules="ward", progress_bar=False, n_jobs=1
        )
    assert t.loc["dae", "status"] == "skipped: RuntimeError: loss became NaN at epoch 1"
    assert "X_compare_dae" not in a.obsm


def test_missing_leiden_skips_rule(synthetic, monkeypatch):
    monkeypatch.setattr(_compare, "_leiden_missing", lambda: "leidenalg not installed")
    a = synthetic[:40].copy()
    with pytest.warns(UserWarning, match="'leiden' rule is skipped: leidenalg not installed"):
        t = sd.tl.compare_clusterings(a, methods="pca", progress_bar=False, n_jobs=1)
    assert t[["n_clusters_leiden", "ari_leiden", "silhouette_leiden"]].isna().all().all()
    assert t.loc["pca", "n_clusters_ward"] >= 2
    assert "compare_pca_leiden" not in a.obs
    assert set(a.uns["compare"]["agreement"]) == {"ward"}
    assert a.uns["compare"]["rules_skipped"] == {"leiden": "leidenalg not installed"}


# ---------------------------------------------------------------------------- bad input


def _bool_col(a, name, values):
    a.var[name] = values
    return a


@pytest.mark.parametrize(
    ("prepare", "kwargs", "exc", "match"),
    [
        (None, {"methods": ("pca", "umap")}, ValueError, r"'umap'.*'pca', 'tsne', 'cidr', 'dae'"),
        (None, {"methods": ()}, ValueError, "`methods` is empty"),
        (None, {"methods": ("pca", "pca")}, ValueError, "more than once"),
        (None, {"rules": ("kmeans",)}, ValueError, r"'kmeans'.*'ward', 'leiden'"),
        (None, {"labels_key": "celltype"}, KeyError, r"celltype.*'group', 'library_size_true'"),
        (None, {"n_clusters": 1}, ValueError, "n_clusters"),
        (None, {"n_clusters": 30}, ValueError, r"n_clusters=30.*number of cells \(30\)"),
        (None, {"genes": "nope"}, KeyError, r"genes='nope'.*gene_ids"),
        (
            lambda a: _bool_col(a, "num", np.arange(a.n_vars)),
            {"genes": "num"},
            ValueError,
            "boolean",
        ),
        (
            lambda a: _bool_col(a, "none", np.zeros(a.n_vars, bool)),
            {"genes": "none"},
            ValueError,
            "selects 0 genes",
        ),
        (None, {"method_kwargs": {"cidr": {"bogus": 1}}}, ValueError, "unknown argument 'bogus'"),
        (None, {"method_kwargs": {"dae": {"copy": False}}}, ValueError, "sets itself"),
        (None, {"method_kwargs": {"umap": {}}}, ValueError, "not a method"),
        (None, {"layer": "counts"}, KeyError, "layer='counts'"),
        (None, {"n_pcs": 0}, ValueError, "n_pcs"),
        (None, {"resolution": -1.0}, ValueError, "resolution"),
        (None, {"random_state": -1}, ValueError, "random_state"),
        (None, {"key_added": ""}, TypeError, "key_added"),
        (
            lambda a: a.obs.__setitem__("one", "x"),
            {"labels_key": "one"},
            ValueError,
            "1 categories",
        ),
        (
            lambda a: a.obs.__setitem__("compare_pca_ward", "mine"),
            {},
            ValueError,
            r"compare_pca_ward.*not written by scdropout",
        ),
        (
            lambda a: a.layers.__setitem__("logs", np.log1p(a.X.toarray())),
            {"layer": "logs"},
            ValueError,
            "non-integer values",
        ),
        (
            lambda a: a.X.__setitem__((0, slice(None)), 0),
            {},
            ValueError,
            "has no counts",
        ),
    ],
)
def test_bad_input_raises_before_any_work(synthetic, prepare, kwargs, exc, match):
    a = synthetic[:30].copy()
    if prepare is not None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sparse.SparseEfficiencyWarning)
            prepare(a)
    before = a.copy()
    with pytest.raises(exc, match=match):
        sd.tl.compare_clusterings(a, progress_bar=False, **kwargs)
    assert_equal(a, before)


def test_not_anndata():
    with pytest.raises(TypeError, match="AnnData"):
        sd.tl.compare_clusterings(np.ones((5, 5)))


def test_progress_bar_and_one_log_line_per_method(synthetic, capsys, caplog):
    a = synthetic[:40].copy()
    kw = {"methods": ("tsne", "pca"), "rules": "ward", "n_jobs": 1}
    with caplog.at_level("INFO", logger="scdropout"):
        t = sd.tl.compare_clusterings(a, progress_bar=True, **kw)
    assert "compare: 100%" in capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name == "scdropout"]
    per_method = [m for m in lines if m.startswith("compare_clusterings: ") and "ward: k=" in m]
    assert [m.split(",")[0] for m in per_method] == [
        "compare_clusterings: tsne",
        "compare_clusterings: pca",
    ]
    # t-SNE ran first and computed the shared PCA: same PCs as PCA alone
    b = synthetic[:40].copy()
    sd.tl.compare_clusterings(b, methods="pca", rules="ward", progress_bar=False, n_jobs=1)
    assert_allclose(a.obsm["X_compare_pca"], b.obsm["X_compare_pca"])
    assert list(t.index) == ["tsne", "pca"]
    sd.settings.progress_bar = False
    try:
        sd.tl.compare_clusterings(b, methods="pca", rules="ward", progress_bar=True, n_jobs=1)
    finally:
        sd.settings.progress_bar = True
    assert "compare:" not in capsys.readouterr().err


def test_leiden_rule_runs_above_pynndescent_threshold():
    # scanpy switches to pynndescent above 4,096 cells, which breaks with scipy >= 1.17
    from scdropout.tl._compare import _leiden

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    emb = np.concatenate([c + rng.normal(size=(1700, 2)) for c in centres])
    labels = np.asarray(_leiden(emb, n_neighbors=15, resolution=0.05, random_state=0))
    assert labels.shape == (5100,)
    truth = np.repeat([0, 1, 2], 1700)
    assert adjusted_rand_score(truth, labels) > 0.95


def test_labels_with_fewer_than_two_known_cells_are_refused(synthetic):
    a = synthetic[:60].copy()
    a.obs["lab"] = pd.Series([np.nan] * 60, index=a.obs_names, dtype=object)
    with pytest.raises(ValueError, match=r"labels 0 of 60 cells.*at least 2 labelled"):
        sd.tl.compare_clusterings(
            a, methods="pca", labels_key="lab", n_clusters=3, progress_bar=False
        )
    assert "compare" not in a.uns


def test_ward_finds_clusters_of_repeated_points():
    # sklearn's Calinski-Harabasz is 1.0 (its worst) when every cluster is one repeated point
    emb = np.repeat([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], 10, axis=0)
    labels, k = _compare._ward(emb, None)
    assert k == 3
    assert sorted(np.bincount(labels.codes)) == [10, 10, 10]
