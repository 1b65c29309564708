"""The command line interface, run in-process through ``main([...])``."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scdropout as sd
from scdropout.cli import main


@pytest.fixture(scope="module")
def sample_h5(tmp_path_factory):
    adata = sd.datasets.synthetic(n_cells=200, n_genes=300, n_markers=15, random_state=1)
    path = tmp_path_factory.mktemp("cli") / "sample.h5"
    sd.io.write_10x_h5(adata, path)
    return path, adata


def test_info_prints_summary(sample_h5, capsys):
    path, adata = sample_h5
    assert main(["info", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["cells", "200"] for line in out.splitlines())
    expected_sparsity = 100 * (1 - adata.X.nnz / np.prod(adata.shape))
    assert f"{expected_sparsity:.1f}% zeros" in out
    assert "M3Drop K" in out


def test_info_json_matches_data(sample_h5, capsys):
    path, adata = sample_h5
    assert main(["info", str(path), "--json", "--quiet"]) == 0
    s = json.loads(capsys.readouterr().out)
    lib = np.asarray(adata.X.sum(1)).ravel()
    assert s["cells"] == 200
    assert s["genes"] == 300
    assert s["library_size"]["median"] == pytest.approx(np.median(lib))
    assert s["zeros_observed"] == np.prod(adata.shape) - adata.X.nnz
    assert 0 < s["zeros_expected_nb"] < np.prod(adata.shape)


def test_genes_writes_h5ad_and_table(sample_h5, tmp_path, capsys):
    path, _ = sample_h5
    out = tmp_path / "res.h5ad"
    rc = main(["genes", str(path), "--out", str(out), "--n-top-genes", "40", "--flavor", "m3drop"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "dropout-aware gene selection (m3drop): done" in err
    res = ad.read_h5ad(out)
    assert int(res.var["dropout_genes_selected"].sum()) == 40
    assert "dropout_rate" in res.var
    table = pd.read_csv(tmp_path / "res.genes.csv", index_col=0)
    assert len(table) == 300
    assert table["rank"].is_monotonic_increasing
    assert set(table.index[table["selected"]]) == set(
        res.var_names[res.var["dropout_genes_selected"]]
    )
    assert not list(tmp_path.glob(".*partial*"))


def test_genes_refuses_existing_output(sample_h5, tmp_path, capsys):
    path, _ = sample_h5
    out = tmp_path / "res.h5ad"
    out.write_text("mine")
    assert main(["genes", str(path), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scdropout: error: ")
    assert "res.h5ad" in err
    assert "--overwrite" in err
    assert out.read_text() == "mine"


def test_missing_input_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "nope.h5"
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"scdropout: error: input {str(bad)!r} does not exist"


def test_bad_data_error_names_the_problem(tmp_path, capsys):
    adata = ad.AnnData(np.array([[1.5, 0.0], [2.0, 1.0]], dtype=np.float32))
    adata.obs_names = ["c1", "c2"]
    adata.var_names = ["g1", "g2"]
    p = tmp_path / "frac.h5ad"
    adata.write_h5ad(p)
    assert main(["info", str(p), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "non-integer" in err
    assert "'c1'" in err


def test_usage_error_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["genes", "x.h5"])  # --out missing
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


# --- genes: the gene table is checked before any work -----------------------------------------


def _no_outputs(folder) -> list[str]:
    """Names in ``folder`` that a failed run left behind (outputs or temporary files)."""
    return [
        p.name for p in folder.iterdir() if p.suffix in (".h5ad", ".csv") or "partial" in p.name
    ]


def test_genes_refuses_table_equal_to_out(sample_h5, tmp_path, capsys):
    path, _ = sample_h5
    out = tmp_path / "res.h5ad"
    argv = ["genes", str(path), "--out", str(out), "--table", str(tmp_path / "." / "res.h5ad")]
    assert main([*argv, "--quiet", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "--table" in err
    assert "same file as --out" in err
    assert _no_outputs(tmp_path) == []


@pytest.mark.parametrize("kind", ["missing folder", "folder"])
def test_genes_checks_table_before_reading(sample_h5, tmp_path, monkeypatch, capsys, kind):
    path, _ = sample_h5
    table = tmp_path / "nodir" / "t.csv" if kind == "missing folder" else tmp_path / "tabdir"
    if kind == "folder":
        table.mkdir()
    monkeypatch.setattr(sd.io, "read_10x", _must_not_read)
    argv = ["genes", str(path), "--out", str(tmp_path / "r.h5ad"), "--table", str(table)]
    assert main([*argv, "--quiet", "--overwrite"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("scdropout: error: ")
    assert f"--table {str(table)!r}" in err
    assert _no_outputs(tmp_path) == []


def test_genes_failed_table_write_leaves_nothing(sample_h5, tmp_path, monkeypatch, capsys):
    path, _ = sample_h5

    def disk_full(self, *args, **kwargs):
        msg = "No space left on device"
        raise OSError(msg)

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    assert main(["genes", str(path), "--out", str(tmp_path / "r.h5ad"), "--quiet"]) == 1
    assert "No space left" in capsys.readouterr().err
    assert _no_outputs(tmp_path) == []


# --- options are checked before any data is read, with messages naming the flag ---------------


def _must_not_read(*args, **kwargs):
    msg = "data was read before the options were checked"
    raise AssertionError(msg)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["genes", "x.h5", "--out", "r.h5ad", "--n-top-genes", "0"], "--n-top-genes"),
        (["genes", "x.h5", "--out", "r.h5ad", "--n-top-genes", "ten"], "--n-top-genes"),
        (["genes", "x.h5", "--out", "r.h5ad", "--fdr", "0"], "--fdr"),
        (["genes", "x.h5", "--out", "r.h5ad", "--fdr", "1.5"], "--fdr"),
        (["genes", "x.h5", "--out", "r.h5ad", "--fdr", "nan"], "--fdr"),
        (["info", "x.h5", "--n-jobs", "0"], "--n-jobs"),
        (["info", "x.h5", "--n-jobs", "-2"], "--n-jobs"),
    ],
)
def test_bad_option_is_a_usage_error_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert f"argument {flag}: expected" in capsys.readouterr().err


def test_n_jobs_minus_one_means_all_cores(sample_h5, capsys):
    path, _ = sample_h5
    assert main(["info", str(path), "--quiet", "--json", "--n-jobs", "-1"]) == 0
    assert json.loads(capsys.readouterr().out)["cells"] == 200


@pytest.mark.parametrize("command", ["info", "genes"])
def test_layer_with_a_10x_input_is_refused_before_reading(
    sample_h5, tmp_path, monkeypatch, capsys, command
):
    path, _ = sample_h5
    monkeypatch.setattr(sd.io, "read_10x", _must_not_read)
    argv = [command, str(path), "--layer", "counts", "--quiet"]
    if command == "genes":
        argv += ["--out", str(tmp_path / "r.h5ad")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--layer 'counts' applies to .h5ad inputs only" in err
    assert str(path) in err


# --- 10X inputs that need care -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cite_h5(tmp_path_factory):
    """A v3 .h5 with antibody counts, where 3 cells have antibody counts only."""
    import anndata as ad_

    adata = sd.datasets.synthetic(n_cells=60, n_genes=80, n_markers=5, random_state=4)
    X = adata.X.toarray()
    X[:3] = 0
    antibodies = np.zeros((adata.n_obs, 2), dtype=np.float32)
    antibodies[:, 0] = 5
    var = pd.DataFrame(
        {
            "gene_ids": [*adata.var["gene_ids"], "AB1", "AB2"],
            "feature_types": ["Gene Expression"] * adata.n_vars + ["Antibody Capture"] * 2,
        },
        index=[*adata.var_names, "CD3_TotalSeqB", "CD4_TotalSeqB"],
    )
    full = ad_.AnnData(X=np.hstack([X, antibodies]), obs=adata.obs[[]], var=var)
    path = tmp_path_factory.mktemp("cite") / "cite.h5"
    sd.io.write_10x_h5(full, path)
    return path, adata.obs_names[:3]


def test_info_drops_cells_with_antibody_counts_only(cite_h5, capsys):
    path, empty = cite_h5
    assert main(["info", str(path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["cells"] == 57
    assert f"scdropout: warning: 3 cells without any count were removed (first {empty[0]!r})" in (
        captured.err
    )


def test_genes_drops_cells_with_antibody_counts_only(cite_h5, tmp_path, capsys):
    path, empty = cite_h5
    out = tmp_path / "r.h5ad"
    assert main(["genes", str(path), "--out", str(out), "--n-top-genes", "10"]) == 0
    assert "3 cells without any count were removed" in capsys.readouterr().err
    res = ad.read_h5ad(out)
    assert res.n_obs == 57
    assert not set(empty) & set(res.obs_names)


@pytest.mark.shared
def test_info_on_real_cite_seq_sample(shared, capsys):
    folder = shared / "data/10x/scvi_pbmc_10k_protein_v3/filtered_feature_bc_matrix"
    assert main(["info", str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    assert "8 cells without any count were removed" in captured.err
    assert json.loads(captured.out)["cells"] > 0


def test_genome_errors_name_the_flag(tmp_path, capsys):
    adata = sd.datasets.synthetic(n_cells=30, n_genes=40, n_markers=5, random_state=5)
    adata.var["genome"] = ["hg19"] * 20 + ["mm10"] * 20
    path = tmp_path / "two.h5"
    sd.io.write_10x_h5(adata, path, version=2)
    assert main(["info", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "holds 2 genomes ['hg19', 'mm10']; choose one with --genome." in err
    assert "genome=" not in err
    assert main(["info", str(path), "--quiet", "--genome", "rn6"]) == 1
    err = capsys.readouterr().err
    assert "--genome 'rn6' is not in" in err
    assert "genome=" not in err


def test_h5ad_named_h5_is_not_taken_for_a_10x_file(tmp_path, capsys):
    adata = sd.datasets.synthetic(n_cells=30, n_genes=40, n_markers=5, random_state=5)
    path = tmp_path / "saved.h5"
    adata.write_h5ad(path)
    assert main(["info", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "is an AnnData (.h5ad) file, not a Cell Ranger .h5" in err
    assert "genomes" not in err


def test_info_on_an_h5ad_without_x_names_the_flag(tmp_path, capsys):
    a = sd.datasets.synthetic(n_cells=40, n_genes=60, random_state=0)
    b = ad.AnnData(obs=a.obs[[]].copy(), var=a.var[[]].copy())
    b.layers["counts"] = a.X.copy()
    path = tmp_path / "nox.h5ad"
    b.write_h5ad(path)
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err
    assert "`adata.X` is None; pass --layer" in err
