"""read_10x_h5: Cell Ranger v2/v3 HDF5, cross-checks with the mtx reader and scanpy, bad input."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest

import scdropout as sd

GEX6 = ["CD3E", "MS4A1", "CD3E-1", "NKG7", "LYZ", "SILENT"]


def _esc(path) -> str:
    return re.escape(str(path))


def test_v3_all_features(tiny_10x):
    adata = sd.io.read_10x_h5(tiny_10x.v3_h5, gex_only=False)
    assert adata.X.format == "csr"
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), tiny_10x.adata.X.toarray())
    assert list(adata.obs_names) == list(tiny_10x.adata.obs_names)
    assert list(adata.var_names) == [*GEX6, "CD3E-2", "CD19_TotalSeqB"]
    assert list(adata.var["gene_ids"]) == list(tiny_10x.adata.var["gene_ids"])
    assert list(adata.var["feature_types"]) == list(tiny_10x.adata.var["feature_types"])
    assert list(adata.var["genome"]) == ["GRCh38"] * 6 + [""] * 2


def test_v3_gex_only(tiny_10x):
    adata = sd.io.read_10x_h5(tiny_10x.v3_h5)
    assert list(adata.var_names) == GEX6
    np.testing.assert_array_equal(adata.X.toarray(), tiny_10x.gex.X.toarray())
    assert adata.X.has_canonical_format


def test_v2(tiny_10x):
    adata = sd.io.read_10x_h5(tiny_10x.v2_h5)
    np.testing.assert_array_equal(adata.X.toarray(), tiny_10x.gex.X.toarray())
    assert list(adata.var_names) == GEX6
    assert list(adata.var["feature_types"]) == ["Gene Expression"] * 6
    assert list(adata.var["genome"]) == ["GRCh38"] * 6


@pytest.mark.parametrize("gex_only", [True, False])
def test_all_four_layouts_agree(tiny_10x, same_10x, gex_only):
    """The four files written from one matrix read back identically (v2 files are GEX only)."""
    ref = sd.io.read_10x_mtx(tiny_10x.v3_mtx, gex_only=gex_only)
    cols = ("gene_ids", "feature_types")
    same_10x(sd.io.read_10x_h5(tiny_10x.v3_h5, gex_only=gex_only), ref, columns=cols)
    if gex_only:
        same_10x(sd.io.read_10x_h5(tiny_10x.v2_h5), ref, columns=cols)
        same_10x(sd.io.read_10x_mtx(tiny_10x.v2_mtx), ref, columns=cols)


@pytest.mark.parametrize(
    ("layout", "kw"),
    [
        ("v3_h5", {}),
        ("v3_h5", {"gex_only": False}),
        ("v3_h5", {"genome": "GRCh38"}),
        ("v2_h5", {}),
        ("v2_h5", {"genome": "GRCh38"}),
    ],
)
def test_agrees_with_scanpy(tiny_10x, same_10x, read_scanpy_h5, layout, kw):
    path = getattr(tiny_10x, layout)
    ref = read_scanpy_h5(path, **kw)
    columns = [c for c in ("gene_ids", "feature_types", "genome") if c in ref.var]
    same_10x(sd.io.read_10x_h5(path, **kw), ref, columns=columns)


def _two_genomes(tiny_10x):
    adata = tiny_10x.gex.copy()
    adata.var["genome"] = ["GRCh38"] * 3 + ["mm10"] * 3
    return adata


def test_v3_genome_selection(tiny_10x, tmp_path):
    path = tmp_path / "barnyard.h5"
    sd.io.write_10x_h5(_two_genomes(tiny_10x), path)
    mm10 = sd.io.read_10x_h5(path, genome="mm10")
    assert list(mm10.var_names) == ["NKG7", "LYZ", "SILENT"]
    np.testing.assert_array_equal(mm10.X.toarray(), tiny_10x.gex.X.toarray()[:, 3:])
    assert sd.io.read_10x_h5(path).n_vars == 6  # v3: no genome keeps all
    with pytest.raises(
        ValueError, match=r"`genome='hg19'` is not in .*genomes present: \['GRCh38', 'mm10'\]"
    ):
        sd.io.read_10x_h5(path, genome="hg19")


def test_v2_one_group_per_genome(tiny_10x, tmp_path, same_10x, read_scanpy_h5):
    path = tmp_path / "barnyard_v2.h5"
    sd.io.write_10x_h5(_two_genomes(tiny_10x), path, version=2)
    with h5py.File(path) as f:
        assert sorted(f) == ["GRCh38", "mm10"]
    for genome in ("GRCh38", "mm10"):
        ref = read_scanpy_h5(path, genome=genome)
        same_10x(sd.io.read_10x_h5(path, genome=genome), ref)
    with pytest.raises(ValueError, match=rf"{_esc(path)}.* holds 2 genomes \['GRCh38', 'mm10'\]"):
        sd.io.read_10x_h5(path)
    with pytest.raises(ValueError, match=r"`genome='hg19'` is not in .*\['GRCh38', 'mm10'\]"):
        sd.io.read_10x_h5(path, genome="hg19")


def test_probe_barcode_matrix(tiny_10x, read_scanpy_h5, same_10x):
    """Flex (probe) matrices: features/id is the probe, features/gene_id the gene, as in scanpy."""
    with h5py.File(tiny_10x.v3_h5, "a") as f:
        ids = f["matrix/features/id"][()]
        f["matrix/features/gene_id"] = np.array([b"G" + i for i in ids])
    ours = sd.io.read_10x_h5(tiny_10x.v3_h5)
    assert list(ours.var["probe_ids"]) == list(tiny_10x.gex.var["gene_ids"])
    assert ours.var["gene_ids"].iloc[0] == "G" + tiny_10x.gex.var["gene_ids"].iloc[0]
    same_10x(ours, read_scanpy_h5(tiny_10x.v3_h5), columns=("gene_ids", "probe_ids"))


# --- bad input ---------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sd.io.read_10x_h5(tmp_path / "nope.h5")


def test_folder_instead_of_file(tiny_10x):
    with pytest.raises(ValueError, match=f"{_esc(tiny_10x.v3_mtx)}.* is a folder"):
        sd.io.read_10x_h5(tiny_10x.v3_mtx)


def test_not_hdf5(tmp_path):
    path = tmp_path / "fake.h5"
    path.write_text("not hdf5\n")
    with pytest.raises(ValueError, match=f"{_esc(path)}.* is not a readable HDF5 file"):
        sd.io.read_10x_h5(path)


@pytest.mark.parametrize("dataset", ["indptr", "barcodes", "features/feature_type"])
def test_v3_missing_dataset(tiny_10x, dataset):
    with h5py.File(tiny_10x.v3_h5, "a") as f:
        del f[f"matrix/{dataset}"]
    pattern = f"{_esc(tiny_10x.v3_h5)}.* dataset '/matrix/{dataset}' is missing"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(tiny_10x.v3_h5)


def test_v2_missing_dataset(tiny_10x):
    with h5py.File(tiny_10x.v2_h5, "a") as f:
        del f["GRCh38/gene_names"]
    pattern = f"{_esc(tiny_10x.v2_h5)}.* dataset '/GRCh38/gene_names' is missing"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(tiny_10x.v2_h5)


def test_no_matrix_and_no_genome_groups(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match=rf"{_esc(path)}.* neither a 'matrix' group .*\['x'\]"):
        sd.io.read_10x_h5(path)


def test_unknown_genome_v3(tiny_10x):
    with pytest.raises(ValueError, match=r"`genome='mm10'` is not in .*present: \['GRCh38', ''\]"):
        sd.io.read_10x_h5(tiny_10x.v3_h5, genome="mm10")


def test_barcodes_disagree_with_shape(tiny_10x):
    with h5py.File(tiny_10x.v3_h5, "a") as f:
        bcs = f["matrix/barcodes"][()]
        del f["matrix/barcodes"]
        f["matrix/barcodes"] = bcs[:-1]
    pattern = f"{_esc(tiny_10x.v3_h5)}.* '/matrix/barcodes' has shape \\(5,\\) .* 6 barcodes"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(tiny_10x.v3_h5)


def test_features_disagree_with_shape(tiny_10x):
    with h5py.File(tiny_10x.v2_h5, "a") as f:
        f["GRCh38/shape"][0] = 7
    pattern = f"{_esc(tiny_10x.v2_h5)}.* '/GRCh38/genes' has shape \\(6,\\) .* 7 features"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(tiny_10x.v2_h5)


def test_indptr_disagrees_with_shape(tiny_10x):
    with h5py.File(tiny_10x.v3_h5, "a") as f:
        indptr = f["matrix/indptr"][()]
        del f["matrix/indptr"]
        f["matrix/indptr"] = indptr[:-1]
    pattern = f"{_esc(tiny_10x.v3_h5)}.* shape says 6 barcodes \\(indptr needs 7 entries, has 6\\)"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(tiny_10x.v3_h5)


def test_corrupt_indices(tiny_10x):
    with h5py.File(tiny_10x.v3_h5, "a") as f:
        f["matrix/indices"][0] = 99
    with pytest.raises(ValueError, match=f"{_esc(tiny_10x.v3_h5)}.* indices fall outside"):
        sd.io.read_10x_h5(tiny_10x.v3_h5)


def test_negative_count(tiny_10x):
    with h5py.File(tiny_10x.v3_h5, "a") as f:
        f["matrix/data"][0] = -5
    pattern = (
        rf"{_esc(tiny_10x.v3_h5)}.* negative values \(first (?:np\.\w+\()?-5\)?, "
        r"cell 'AAACCTGAGAAACCAT-1', gene 'CD3E'\)"
    )
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(tiny_10x.v3_h5)


def test_non_integer_count(tiny_10x):
    with h5py.File(tiny_10x.v3_h5, "a") as f:
        data = f["matrix/data"][()].astype(np.float64)
        data[1] = 0.5
        del f["matrix/data"]
        f["matrix/data"] = data
    pattern = rf"{_esc(tiny_10x.v3_h5)}.* non-integer values \(first (?:np\.\w+\()?0\.5"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(tiny_10x.v3_h5)


def test_float_data_with_integral_values(tiny_10x, same_10x):
    with h5py.File(tiny_10x.v3_h5, "a") as f:
        data = f["matrix/data"][()].astype(np.float64)
        del f["matrix/data"]
        f["matrix/data"] = data
    same_10x(sd.io.read_10x_h5(tiny_10x.v3_h5), sd.io.read_10x_mtx(tiny_10x.v3_mtx))


def test_duplicated_barcode(tiny_10x):
    with h5py.File(tiny_10x.v2_h5, "a") as f:
        f["GRCh38/barcodes"][1] = f["GRCh38/barcodes"][0]
    with pytest.raises(ValueError, match=f"{_esc(tiny_10x.v2_h5)}.* 'AAACCTGAGAAACCAT-1' more"):
        sd.io.read_10x_h5(tiny_10x.v2_h5)


def test_gex_only_without_gene_expression(tiny_10x, tmp_path):
    adata = tiny_10x.adata[:, 6:].copy()
    path = tmp_path / "antibodies.h5"
    sd.io.write_10x_h5(adata, path)
    with pytest.raises(ValueError, match=f"{_esc(path)}.* has no 'Gene Expression' features"):
        sd.io.read_10x_h5(path)
    assert sd.io.read_10x_h5(path, gex_only=False).n_vars == 2


# --- chunk reading: parallel inflate of deflate chunks vs HDF5's own pipeline ----------------


@pytest.fixture
def multi_chunk_h5(tmp_path):
    """A v3 file whose data/indices span several 80,000-entry chunks."""
    adata = sd.datasets.synthetic(n_cells=600, n_genes=1000, true_counts=False, random_state=3)
    assert adata.X.nnz > 2 * 80_000
    path = tmp_path / "big.h5"
    sd.io.write_10x_h5(adata, path)
    return path, adata


def _refilter(path, **filters):
    """Rewrite data/indices/indptr of a v3 file with other HDF5 filters."""
    with h5py.File(path, "a") as f:
        for name in ("data", "indices", "indptr"):
            values = f[f"matrix/{name}"][()]
            del f[f"matrix/{name}"]
            f.create_dataset(f"matrix/{name}", data=values, **filters)


@pytest.mark.parametrize(
    "filters",
    [
        None,  # as written: deflate only, read by the threaded path
        {"compression": "gzip", "shuffle": True, "chunks": (50_000,), "maxshape": (None,)},
        {"compression": "lzf"},
        {"compression": "gzip", "fletcher32": True},
        {},  # contiguous, uncompressed
    ],
    ids=["deflate", "shuffle", "lzf", "fletcher32", "contiguous"],
)
@pytest.mark.parametrize("n_jobs", [1, 3])
def test_every_storage_layout_reads_the_same(multi_chunk_h5, monkeypatch, filters, n_jobs):
    path, adata = multi_chunk_h5
    if filters is not None:
        _refilter(path, **filters)
    monkeypatch.setattr(sd.settings, "n_jobs", n_jobs)
    back = sd.io.read_10x_h5(path)
    assert back.X.has_canonical_format
    assert (back.X != adata.X).nnz == 0
    assert list(back.obs_names) == list(adata.obs_names)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_corrupt_chunk(multi_chunk_h5, monkeypatch, n_jobs):
    path, _ = multi_chunk_h5
    with h5py.File(path, "a") as f:
        offset = f["matrix/indices"].id.get_chunk_info(1).byte_offset
    with path.open("r+b") as fh:
        fh.seek(offset + 100)
        fh.write(b"\x00" * 64)
    monkeypatch.setattr(sd.settings, "n_jobs", n_jobs)
    pattern = f"{_esc(path)}': dataset '/matrix/indices' cannot be read .* damaged"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(path)


@pytest.mark.parametrize("genome", [None, "X"])
def test_h5ad_named_h5_is_not_read_as_v2(tiny_10x, tmp_path, genome):
    """An .h5ad under an .h5 name is not taken for a v2 file whose genomes are X, obs, var..."""
    path = tmp_path / "saved.h5"
    tiny_10x.gex.write_h5ad(path)
    pattern = rf"{_esc(path)}' is an AnnData \(\.h5ad\) file, not a Cell Ranger \.h5.*read_h5ad"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_h5(path, genome=genome)
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x(path)


def test_groups_without_10x_datasets_are_not_genomes(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_group("results")["values"] = np.arange(3)
    with pytest.raises(
        ValueError, match=rf"{_esc(path)}.* neither a 'matrix' group .*\['results'\]"
    ):
        sd.io.read_10x_h5(path)
