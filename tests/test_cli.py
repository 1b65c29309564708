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
