"""read_10x picks the reader from the path; read_10x_samples stacks samples."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pandas as pd
import pytest

import scdropout as sd


def _esc(path) -> str:
    return re.escape(str(path))


def _outs(tmp_path, tiny_10x, *, h5=True, folder=True):
    """A Cell Ranger v3 outs/ folder; the h5 holds only the first 4 cells to tell them apart."""
    outs = tmp_path / "sample" / "outs"
    if folder:
        shutil.copytree(tiny_10x.v3_mtx, outs / "filtered_feature_bc_matrix")
    if h5:
        sd.io.write_10x_h5(tiny_10x.adata[:4].copy(), outs / "filtered_feature_bc_matrix.h5")
    return outs


def test_h5_file(tiny_10x, same_10x):
    same_10x(sd.io.read_10x(tiny_10x.v3_h5), sd.io.read_10x_h5(tiny_10x.v3_h5))


def test_mtx_folder(tiny_10x, same_10x):
    ref = sd.io.read_10x_mtx(tiny_10x.v3_mtx, var_names="gene_ids", gex_only=False)
    ours = sd.io.read_10x(tiny_10x.v3_mtx, var_names="gene_ids", gex_only=False)
    same_10x(ours, ref, columns=("gene_ids", "gene_symbols", "feature_types"))


def test_outs_prefers_h5(tiny_10x, tmp_path):
    outs = _outs(tmp_path, tiny_10x)
    assert sd.io.read_10x(outs).n_obs == 4
    assert sd.io.read_10x(outs.parent).n_obs == 4  # the sample folder holding outs/


def test_outs_with_folder_only(tiny_10x, tmp_path, same_10x):
    outs = _outs(tmp_path, tiny_10x, h5=False)
    same_10x(sd.io.read_10x(outs), sd.io.read_10x_mtx(tiny_10x.v3_mtx))


def test_outs_v2_genome_folders(tiny_10x, tmp_path, same_10x):
    outs = tmp_path / "outs"
    shutil.copytree(tiny_10x.v2_mtx, outs / "filtered_gene_bc_matrices" / "GRCh38")
    same_10x(sd.io.read_10x(outs), sd.io.read_10x_mtx(tiny_10x.v2_mtx))
    mm10 = tiny_10x.gex[:2].copy()
    sd.io.write_10x_mtx(mm10, outs / "filtered_gene_bc_matrices" / "mm10", version=2)
    assert sd.io.read_10x(outs, genome="mm10").n_obs == 2
    assert sd.io.read_10x(outs, genome="GRCh38").n_obs == 6
    with pytest.raises(ValueError, match=r"holds 2 genomes \['GRCh38', 'mm10'\]; choose one"):
        sd.io.read_10x(outs)
    with pytest.raises(ValueError, match=r"`genome='hg19'` has no folder .*\['GRCh38', 'mm10'\]"):
        sd.io.read_10x(outs, genome="hg19")


def test_outs_v2_h5(tiny_10x, tmp_path, same_10x):
    outs = tmp_path / "outs"
    outs.mkdir()
    shutil.copy(tiny_10x.v2_h5, outs / "filtered_gene_bc_matrices_h5.h5")
    same_10x(sd.io.read_10x(outs), sd.io.read_10x_h5(tiny_10x.v2_h5))


def test_h5ad_is_returned_as_stored(tiny_10x, tmp_path, same_10x):
    path = tmp_path / "x.h5ad"
    adata = sd.io.read_10x_h5(tiny_10x.v3_h5, gex_only=False)
    adata.write_h5ad(path)
    same_10x(sd.io.read_10x(path), adata, columns=("gene_ids", "feature_types", "genome"))


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{_esc(tmp_path / 'nope')}.* does not exist"):
        sd.io.read_10x(tmp_path / "nope")


def test_unsupported_file(tiny_10x):
    path = tiny_10x.v3_mtx / "matrix.mtx.gz"
    with pytest.raises(ValueError, match=f"{_esc(path)}.* neither a folder nor an .h5/.h5ad"):
        sd.io.read_10x(path)


def test_folder_without_matrix_lists_content(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "fastq").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no 10X matrix.*holds fastq/, notes\.txt"):
        sd.io.read_10x(tmp_path)


def test_mtx_options_rejected_for_h5(tiny_10x):
    with pytest.raises(ValueError, match=r"`var_names='gene_ids'`.* apply to matrix folders"):
        sd.io.read_10x(tiny_10x.v3_h5, var_names="gene_ids")


def test_genome_rejected_for_matrix_folder(tiny_10x):
    with pytest.raises(ValueError, match=r"`genome='GRCh38'` cannot be applied to .*v3_mtx"):
        sd.io.read_10x(tiny_10x.v3_mtx, genome="GRCh38")


# --- read_10x_samples ----------------------------------------------------------------------


def test_samples_stacked_in_order(tiny_10x):
    adata = sd.io.read_10x_samples({"b": tiny_10x.v3_h5, "a": tiny_10x.v2_mtx})
    single = sd.io.read_10x_h5(tiny_10x.v3_h5)
    assert adata.shape == (12, 6)
    assert adata.X.format == "csr"
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), np.vstack([single.X.toarray()] * 2))
    barcodes = list(tiny_10x.adata.obs_names)
    assert list(adata.obs_names) == [f"{b}-b" for b in barcodes] + [f"{b}-a" for b in barcodes]
    assert isinstance(adata.obs["sample"].dtype, pd.CategoricalDtype)
    assert list(adata.obs["sample"].cat.categories) == ["b", "a"]
    assert list(adata.obs["sample"]) == ["b"] * 6 + ["a"] * 6
    assert list(adata.var_names) == list(single.var_names)
    assert list(adata.var["gene_ids"]) == list(single.var["gene_ids"])


def test_samples_with_different_genes(tiny_10x, tmp_path):
    other = tmp_path / "other.h5"
    sd.io.write_10x_h5(tiny_10x.gex[:, :5].copy(), other)
    with pytest.raises(ValueError, match=r"sample 'treated' .*other\.h5.* 5 genes instead of 6"):
        sd.io.read_10x_samples({"ctrl": tiny_10x.v3_h5, "treated": other})


def test_samples_with_other_gene_ids(tiny_10x, tmp_path):
    adata = tiny_10x.gex.copy()
    adata.var["gene_ids"] = [*adata.var["gene_ids"][:-1], "ENSG99"]
    other = tmp_path / "other.h5"
    sd.io.write_10x_h5(adata, other)
    with pytest.raises(ValueError, match=r"sample 'b' .* other gene ids .*gene 5 is 'ENSG99'"):
        sd.io.read_10x_samples({"a": tiny_10x.v3_h5, "b": other})


def test_samples_empty_or_wrong_type(tiny_10x):
    with pytest.raises(ValueError, match="`samples` is empty"):
        sd.io.read_10x_samples({})
    with pytest.raises(TypeError, match="mapping of sample name"):
        sd.io.read_10x_samples([tiny_10x.v3_h5])


def test_samples_suffix_collision(tiny_10x, tmp_path):
    a = tiny_10x.gex.copy()
    a.obs_names = [f"X{i}-b" for i in range(a.n_obs)]
    b = tiny_10x.gex.copy()
    b.obs_names = [f"X{i}" for i in range(b.n_obs)]
    sd.io.write_10x_h5(a, tmp_path / "a.h5")
    sd.io.write_10x_h5(b, tmp_path / "b.h5")
    with pytest.raises(ValueError, match=r"barcode 'X0-b-a' occurs twice"):
        sd.io.read_10x_samples({"a": tmp_path / "a.h5", "b-a": tmp_path / "b.h5"})
