"""``scdropout cluster``: end to end on a small 10X sample, bad inputs, atomic output folder."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scdropout as sd
from scdropout import cli
from scdropout.cli import main

N_CELLS, N_GENES = 150, 200


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 10X .h5, an .h5ad with a label column, a labels CSV, and the AnnData they hold."""
    folder = tmp_path_factory.mktemp("cluster")
    adata = sd.datasets.synthetic(
        n_cells=N_CELLS, n_genes=N_GENES, n_groups=3, n_markers=15, random_state=1
    )
    h5 = folder / "s1.h5"
    sd.io.write_10x_h5(adata, h5)
    labels = folder / "labels.csv"
    pd.DataFrame({"barcode": adata.obs_names, "label": adata.obs["group"].astype(str)}).to_csv(
        labels, index=False
    )
    h5ad = folder / "s2.h5ad"
    ad.AnnData(
        X=adata.X.copy(), obs=adata.obs[["group"]].copy(), var=adata.var[[]].copy()
    ).write_h5ad(h5ad)
    return {"h5": h5, "h5ad": h5ad, "labels": labels, "adata": adata, "folder": folder}


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    assert err[-1].startswith("scdropout: error: ")
    return err[-1]


def _no_leftovers(folder) -> None:
    assert not [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# --- a stand-in for the comparison, for tests of the command's own logic ----------------------


def _fake_compare(adata, *, methods, key_added="compare", **kwargs):
    """Stand-in for tl.compare_clusterings: pca runs, tsne is skipped with a warning."""
    from scdropout._utils import warn

    rng = np.random.default_rng(0)
    rows = {}
    for m in methods:
        if m == "tsne":
            warn("compare_clusterings: method 'tsne' skipped: 150 cells are too few")
            rows[m] = {"status": "skipped: 150 cells are too few", "n_clusters_ward": np.nan}
            continue
        adata.obsm[f"X_{key_added}_{m}"] = rng.normal(size=(adata.n_obs, 2))
        adata.obs[f"{key_added}_{m}_ward"] = pd.Categorical(
            rng.integers(0, 3, adata.n_obs).astype(str)
        )
        rows[m] = {"status": "ok", "n_clusters_ward": 3.0}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    adata.uns[key_added] = {"methods": list(methods)}
    return table


def _fake_plot(adata, **kwargs):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    return fig


@pytest.fixture
def fake_compare(monkeypatch):
    monkeypatch.setattr(sd.tl, "compare_clusterings", _fake_compare)
    monkeypatch.setattr(sd.pl, "compare_embeddings", _fake_plot)
    monkeypatch.setattr(sd.pl, "compare_scores", _fake_plot)


# --- the whole run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "res"
    argv = ["cluster", str(data["h5"]), "--out", str(out), "--labels", str(data["labels"])]
    # t-SNE is left out: on the loaded 2-core machine sklearn's t-SNE alone takes 15-60 s
    argv += ["--methods", "pca,cidr,dae", "--epochs", "2", "--quiet", "--n-top-genes", "150"]
    rc = main(argv)
    assert rc == 0
    return out


def test_run_writes_every_output(full_run, data):
    names = {p.name for p in full_run.iterdir()}
    assert names == {"result.h5ad", "clusters.csv", "comparison.csv", "figures", "report.html"}
    figs = {p.name for p in (full_run / "figures").iterdir()}
    assert figs == {
        "qc.png",
        "dropout_curve.png",
        "embeddings.png",
        "embeddings_labels.png",
        "scores_ari.png",
        "scores_nmi.png",
        "cidr_eigenvalues.png",  # from the comparison's record of tl.cidr (uns["compare_cidr"])
        "autoencoder_history.png",  # and of tl.autoencoder (uns["compare_dae"])
    }
    assert all((full_run / "figures" / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in figs)
    _no_leftovers(full_run.parent)
    res = ad.read_h5ad(full_run / "result.h5ad")
    assert res.shape == (N_CELLS, N_GENES)
    assert int(res.var["dropout_genes_selected"].sum()) == 150
    assert "compare" in res.uns
    assert len(res.uns["compare_dae"]["history"]["train_loss"]) == 2  # --epochs 2
    html = (full_run / "report.html").read_text()
    assert "Autoencoder: loss per epoch" in html
    assert "CIDR: variation per principal coordinate" in html
    assert list(res.obs["label"].astype(str)) == list(data["adata"].obs["group"].astype(str))


def test_clusters_and_comparison_tables(full_run, data):
    clusters = pd.read_csv(full_run / "clusters.csv", index_col=0, dtype=str)
    assert clusters.index.name == "barcode"
    assert list(clusters.index) == list(data["adata"].obs_names)
    assert clusters.columns[:2].tolist() == ["sample", "label"]
    assert set(clusters["sample"]) == {"s1"}
    comparison = pd.read_csv(full_run / "comparison.csv", index_col=0)
    assert comparison.index.tolist() == ["pca", "cidr", "dae"]
    ok = comparison.index[comparison["status"] == "ok"]
    assert "pca" in ok
    res = ad.read_h5ad(full_run / "result.h5ad")
    for method in ok:
        cols = [c for c in clusters.columns if c.startswith(f"{method}_")]
        assert cols, f"no cluster column for {method}"
        for col in cols:
            assert (clusters[col] == res.obs[f"compare_{col}"].astype(str)).all()
    assert comparison.loc["pca", "ari_ward"] > 0.5  # planted groups are easy


def test_report_is_self_contained_and_complete(full_run):
    page = (full_run / "report.html").read_text()
    for sid in (
        "summary",
        "qc",
        "dropout",
        "embeddings",
        "comparison",
        "warnings",
        "parameters",
        "timings",
        "versions",
    ):
        assert f'<section id="{sid}">' in page
    assert page.count('<img src="data:image/png;base64,') == 8  # 6 + CIDR scree + AE loss
    assert not re.search(r"https?://", page)
    assert f"{N_CELLS:,}" in page
    for step in ("load", "dropout statistics", "compare clusterings"):
        assert step in page
    assert "ARI against the labels" in page
    assert "No warnings; every method ran." in page


def test_too_few_cells_skips_a_method_with_a_warning(tmp_path, capsys):
    small = sd.datasets.synthetic(n_cells=15, n_genes=100, n_markers=10, random_state=2)
    h5 = tmp_path / "tiny.h5"
    sd.io.write_10x_h5(small, h5)
    out = tmp_path / "res"
    assert main(["cluster", str(h5), "--out", str(out), "--methods", "pca,dae"]) == 0
    captured = capsys.readouterr()
    assert (
        "scdropout: warning: compare_clusterings: 'dae' is skipped: too few cells" in captured.err
    )
    assert "clustered 15 cells (pca)" in captured.out
    comparison = pd.read_csv(out / "comparison.csv", index_col=0)
    assert comparison.loc["pca", "status"] == "ok"
    assert comparison.loc["dae", "status"].startswith("skipped: too few cells (15 < 20)")
    page = (out / "report.html").read_text()
    warnings_section = page.split('<section id="warnings">')[1].split("</section>")[0]
    assert "&#x27;dae&#x27; is skipped: too few cells (15 &lt; 20)" in warnings_section
    clusters = pd.read_csv(out / "clusters.csv", index_col=0)
    assert not [c for c in clusters.columns if c.startswith("dae")]


def test_obs_column_labels_and_two_samples(fake_compare, data, tmp_path, capsys):
    out = tmp_path / "two"
    argv = ["cluster", str(data["h5ad"]), str(data["h5ad"]), "--out", str(out)]
    rc = main([*argv, "--labels", "group", "--methods", "pca", "--n-clusters", "3"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "[scdropout] dropout statistics: done" in err
    clusters = pd.read_csv(out / "clusters.csv", index_col=0, dtype=str)
    assert len(clusters) == 2 * N_CELLS
    assert clusters["sample"].value_counts().to_dict() == {"s2": N_CELLS, "s2_2": N_CELLS}
    assert clusters.index[0] == f"{data['adata'].obs_names[0]}-s2"
    expected = np.tile(data["adata"].obs["group"].astype(str).to_numpy(), 2)
    assert (clusters["label"].to_numpy() == expected).all()
    assert clusters.columns.tolist()[2:] == [c for c in clusters.columns if c.startswith("pca_")]


def test_overwrite_replaces_previous_result(fake_compare, data, tmp_path):
    out = tmp_path / "res"
    argv = ["cluster", str(data["h5"]), "--out", str(out), "--methods", "pca", "--quiet"]
    assert main(argv) == 0
    (out / "clusters.csv").write_text("old")
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "clusters.csv").read_text().startswith("barcode,sample,")
    _no_leftovers(tmp_path)


def test_failure_late_leaves_no_folder(fake_compare, data, tmp_path, monkeypatch, capsys):
    def boom(**kwargs):
        msg = "disk full while writing the report"
        raise OSError(msg)

    monkeypatch.setattr(sd.report, "render_report", boom)
    out = tmp_path / "res"
    rc = main(["cluster", str(data["h5"]), "--out", str(out), "--methods", "pca", "--quiet"])
    assert rc == 1
    assert "disk full" in _err_line(capsys)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_skipped_method_is_a_warning_in_the_report(fake_compare, data, tmp_path, capsys):
    out = tmp_path / "res"
    rc = main(["cluster", str(data["h5"]), "--out", str(out), "--methods", "pca,tsne"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "scdropout: warning: compare_clusterings: method 'tsne' skipped" in captured.err
    assert "clustered 150 cells (pca)" in captured.out
    page = (out / "report.html").read_text()
    warnings_section = page.split('<section id="warnings">')[1].split("</section>")[0]
    assert "method &#x27;tsne&#x27; skipped: 150 cells are too few" in warnings_section
    comparison = pd.read_csv(out / "comparison.csv", index_col=0)
    assert comparison.loc["tsne", "status"].startswith("skipped")
    clusters = pd.read_csv(out / "clusters.csv", index_col=0)
    assert clusters.columns.tolist() == ["sample", "pca_ward"]


def test_cli_passes_options_to_the_comparison(data, tmp_path, monkeypatch):
    seen = {}

    def spy(adata, **kwargs):
        seen.update(kwargs, genes_selected=int(adata.var["dropout_genes_selected"].sum()))
        return _fake_compare(adata, **kwargs)

    monkeypatch.setattr(sd.tl, "compare_clusterings", spy)
    monkeypatch.setattr(cli, "_figures", lambda *a, **k: {})  # not under test here
    argv = ["cluster", str(data["h5"]), "--out", str(tmp_path / "r"), "--quiet"]
    argv += ["--methods", "dae,pca", "--n-top-genes", "5000", "--epochs", "3", "--device", "cpu"]
    argv += ["--n-clusters", "4", "--random-state", "7", "--flavor", "m3drop"]
    assert main(argv) == 0
    assert seen["methods"] == ("dae", "pca")
    assert seen["rules"] == ("ward", "leiden")
    assert seen["n_clusters"] == 4
    assert seen["random_state"] == 7
    assert seen["genes"] == "dropout_genes_selected"
    assert seen["method_kwargs"]["dae"] == {"device": "cpu", "max_epochs": 3}
    assert seen["labels_key"] is None
    assert seen["progress_bar"] is False
    assert 0 < seen["genes_selected"] <= N_GENES  # 5000 capped at the number of genes
    argv[argv.index("--out") + 1] = str(tmp_path / "r2")
    assert main([*argv, "--genes", "all", "--rules", "ward"]) == 0
    assert seen["genes"] is None
    assert seen["rules"] == ("ward",)


# --- errors before any work -----------------------------------------------------------------------


def test_existing_folder_is_never_touched(data, tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["cluster", str(data["h5"]), "--out", str(out)]) == 1
    line = _err_line(capsys)
    assert "res" in line
    assert "--overwrite" in line
    # --overwrite replaces only a folder that holds a previous result
    assert main(["cluster", str(data["h5"]), "--out", str(out), "--overwrite"]) == 1
    assert "holds no `scdropout cluster` result" in _err_line(capsys)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "keep"


def test_unknown_method_is_a_usage_error(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cluster", str(data["h5"]), "--out", str(tmp_path / "r"), "--methods", "pca,umap"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'umap'" in err
    assert "valid: pca, tsne, cidr, dae" in err
    assert not (tmp_path / "r").exists()


def test_unknown_rule_is_a_usage_error(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cluster", str(data["h5"]), "--out", str(tmp_path / "r"), "--rules", "kmeans"])
    assert exc.value.code == 2
    assert "unknown rule(s) 'kmeans'; valid: ward, leiden" in capsys.readouterr().err


def test_unreadable_input_names_the_file(data, tmp_path, capsys):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"this is not an HDF5 file")
    out = tmp_path / "res"
    assert main(["cluster", str(data["h5"]), str(bad), "--out", str(out)]) == 1
    line = _err_line(capsys)
    assert str(bad) in line
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_missing_input_names_the_file(tmp_path, capsys):
    assert main(["cluster", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "r")]) == 1
    assert (
        _err_line(capsys)
        == f"scdropout: error: input {str(tmp_path / 'nope.h5')!r} does not exist"
    )


def test_mixed_inputs_name_the_odd_one(data, tmp_path, capsys):
    other = sd.datasets.synthetic(n_cells=40, n_genes=120, random_state=3)
    other.var_names = [f"X{i}" for i in range(other.n_vars)]
    odd = tmp_path / "odd.h5ad"
    ad.AnnData(X=other.X, obs=other.obs[[]], var=other.var[[]]).write_h5ad(odd)
    out = tmp_path / "res"
    assert main(["cluster", str(data["h5"]), str(odd), "--out", str(out)]) == 1
    line = _err_line(capsys)
    assert str(odd) in line
    assert "other genes" in line
    assert not out.exists()


def test_non_count_h5ad_names_the_file_and_layer(data, tmp_path, capsys):
    adata = ad.read_h5ad(data["h5ad"])
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X.multiply(0.5).tocsr()
    p = tmp_path / "norm.h5ad"
    adata.write_h5ad(p)
    assert main(["cluster", str(p), "--out", str(tmp_path / "r")]) == 1
    line = _err_line(capsys)
    assert str(p) in line
    assert "non-integer" in line
    assert main(["cluster", str(p), "--out", str(tmp_path / "r"), "--layer", "nope"]) == 1
    assert "'nope' is not a layer" in _err_line(capsys)


def test_mismatched_labels_say_how_many_matched(data, tmp_path, capsys):
    labels = pd.read_csv(data["labels"])
    labels.loc[:49, "barcode"] = [f"WRONG{i}-1" for i in range(50)]
    csv = tmp_path / "labels.csv"
    labels.to_csv(csv, index=False)
    out = tmp_path / "res"
    assert main(["cluster", str(data["h5"]), "--out", str(out), "--labels", str(csv)]) == 1
    line = _err_line(capsys)
    assert "100 of the 150 cells have a label" in line
    assert "100 of its 150 barcodes match" in line
    assert str(csv) in line
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_unknown_labels_column(data, tmp_path, capsys):
    argv = ["cluster", str(data["h5ad"]), "--out", str(tmp_path / "r"), "--labels", "celltype"]
    assert main(argv) == 1
    line = _err_line(capsys)
    assert "'celltype'" in line
    assert "group" in line  # lists the columns that exist


def test_failure_half_way_leaves_no_folder(data, tmp_path, monkeypatch, capsys):
    def boom(adata, **kwargs):
        msg = "gene selection exploded"
        raise RuntimeError(msg)

    monkeypatch.setattr(cli.pp, "dropout_genes", boom)
    out = tmp_path / "res"
    assert main(["cluster", str(data["h5"]), "--out", str(out), "--quiet"]) == 1
    assert _err_line(capsys) == "scdropout: error: gene selection exploded"
    assert list(tmp_path.iterdir()) == []


def test_info_and_genes_still_work(data, tmp_path, capsys):
    assert main(["info", str(data["h5"]), "--quiet", "--json"]) == 0
    assert '"cells": 150' in capsys.readouterr().out


def test_blank_labels_are_an_error(data, tmp_path, capsys):
    """keep_default_na=False reads an empty label as "", which must not become a class."""
    labels = pd.read_csv(data["labels"], dtype=str)
    labels.loc[[3, 7, 11], "label"] = ""
    csv = tmp_path / "labels.csv"
    labels.to_csv(csv, index=False)
    out = tmp_path / "res"
    assert main(["cluster", str(data["h5"]), "--out", str(out), "--labels", str(csv)]) == 1
    line = _err_line(capsys)
    assert f"--labels {str(csv)!r} has no label for 3 cells" in line
    assert repr(data["adata"].obs_names[3]) in line
    assert not out.exists()
    _no_leftovers(tmp_path)


def _must_not_read(*args, **kwargs):
    msg = "data was read before the options were checked"
    raise AssertionError(msg)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--device", "cuda"],
            "--device 'cuda' asks for a CUDA device, but CUDA is not available",
        ),
        (["--labels", "nope/labels.csv"], "--labels 'nope/labels.csv' does not exist"),
        (["--layer", "counts"], "--layer 'counts' applies to .h5ad inputs only"),
        (["MISSING"], "input 'MISSING' does not exist"),
    ],
)
def test_options_and_inputs_are_checked_before_reading(
    data, tmp_path, monkeypatch, capsys, extra, expected
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cli, "_read_sample", _must_not_read)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "res"
    argv = ["cluster", str(data["h5"]), "--out", str(out)]
    if extra == ["MISSING"]:
        argv.insert(2, "MISSING")  # the second sample is missing: the first is not read either
    else:
        argv += extra
    assert main(argv) == 1
    assert expected in _err_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--n-clusters", "1"),
        ("--random-state", "-1"),
        ("--n-jobs", "0"),
        ("--device", "gpu"),
        ("--device", "cuda:x"),
    ],
)
def test_bad_option_is_a_usage_error_naming_the_flag(data, tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["cluster", str(data["h5"]), "--out", str(tmp_path / "r"), option, value])
    assert exc.value.code == 2
    assert f"argument {option}: expected" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_h5_inputs_are_named_after_their_run_folder(tmp_path):
    paths = []
    for run in ("a", "b"):
        outs = tmp_path / run / "outs"
        outs.mkdir(parents=True)
        (outs / "filtered_feature_bc_matrix.h5").touch()
        paths.append(str(outs / "filtered_feature_bc_matrix.h5"))
    (tmp_path / "s1.h5").touch()
    (tmp_path / "c" / "outs" / "filtered_feature_bc_matrix").mkdir(parents=True)
    paths += [str(tmp_path / "s1.h5"), str(tmp_path / "c" / "outs" / "filtered_feature_bc_matrix")]
    assert cli._sample_names(paths) == ["a", "b", "s1", "c"]


@pytest.mark.parametrize("where", ["cwd", "parent of cwd", "holds an input"])
def test_out_that_would_replace_the_working_folder_or_an_input(
    fake_compare, data, tmp_path, monkeypatch, capsys, where
):
    """--out . --overwrite would replace the folder the user is in (before: a PosixPath error)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "result.h5ad").write_text("an old result")  # so --overwrite would accept the folder
    monkeypatch.chdir(work)
    if where == "holds an input":
        sample = work / "s1.h5"
        sample.write_bytes(data["h5"].read_bytes())
        argv, out = ["cluster", str(sample)], str(work)
        monkeypatch.chdir(tmp_path)
    else:
        argv, out = ["cluster", str(data["h5"])], "." if where == "cwd" else ".."
    assert main([*argv, "--out", out, "--overwrite", "--methods", "pca"]) == 1
    line = _err_line(capsys)
    assert f"--out {out!r}" in line
    assert "current folder" in line or "holds the input" in line
    assert (work / "result.h5ad").read_text() == "an old result"
    _no_leftovers(tmp_path)


def test_labels_with_every_method_skipped_still_write_a_report(tmp_path):
    a = sd.datasets.synthetic(n_cells=6, n_genes=200, random_state=1)
    sd.io.write_10x_h5(a, tmp_path / "s.h5")
    labels = tmp_path / "l.csv"
    pd.DataFrame({"barcode": a.obs_names, "label": a.obs["group"].astype(str)}).to_csv(
        labels, index=False
    )
    out = tmp_path / "o"
    argv = ["cluster", str(tmp_path / "s.h5"), "--out", str(out), "--quiet"]
    rc = main([*argv, "--methods", "dae", "--labels", str(labels)])  # dae needs 20 cells
    assert rc == 0
    figures = {p.name for p in (out / "figures").iterdir()}
    assert not {"scores_ari.png", "scores_nmi.png"} & figures  # nothing to score
    assert "embeddings_labels.png" in figures


@pytest.mark.parametrize("column", ["CD4/CD8", "data"])
def test_labels_column_that_looks_like_a_path(fake_compare, data, tmp_path, monkeypatch, column):
    """An obs column may be called "CD4/CD8", or like a folder in the working directory."""
    a = ad.read_h5ad(data["h5ad"])
    a.obs[column] = a.obs["group"].astype(str)
    h5ad = tmp_path / "labelled.h5ad"
    a.write_h5ad(h5ad)
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    argv = ["cluster", str(h5ad), "--out", "res", "--methods", "pca", "--quiet"]
    assert main([*argv, "--labels", column]) == 0
    assert (tmp_path / "res" / "report.html").exists()


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_device_is_checked_only_for_methods_that_use_it(
    fake_compare, data, tmp_path, monkeypatch, device
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["cluster", str(data["h5"]), "--out", str(tmp_path / "r"), "--methods", "pca"]
    assert main([*argv, "--device", device, "--quiet"]) == 0


def test_out_messages_show_the_path_as_given(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r1").mkdir()
    assert main(["cluster", str(data["h5"]), "--out", "r1", "--methods", "pca"]) == 1
    assert "--out 'r1' exists; pass --overwrite" in _err_line(capsys)
