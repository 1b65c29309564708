"""write_10x_h5 / write_10x_mtx: valid Cell Ranger layouts, reproducible bytes, bad input."""

from __future__ import annotations

import gzip
import hashlib
import re

import anndata as ad
import h5py
import numpy as np
import pytest
import scanpy as sc
from scipy import sparse

import scdropout as sd


def _esc(path) -> str:
    return re.escape(str(path))


def _sha(path) -> str:
    files = [path] if path.is_file() else sorted(p for p in path.iterdir())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_v3_mtx_bytes(tiny_10x):
    folder = tiny_10x.v3_mtx
    assert sorted(p.name for p in folder.iterdir()) == [
        "barcodes.tsv.gz",
        "features.tsv.gz",
        "matrix.mtx.gz",
    ]
    for f in folder.iterdir():
        raw = f.read_bytes()
        assert raw[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no FNAME/FEXTRA flags
        assert raw[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    lines = gzip.decompress((folder / "matrix.mtx.gz").read_bytes()).decode().splitlines()
    assert lines[0] == "%%MatrixMarket matrix coordinate integer general"
    assert lines[1].startswith("%metadata_json: ")
    assert lines[2] == "8 6 19"  # features, barcodes, entries
    entries = np.array([[int(x) for x in ln.split()] for ln in lines[3:]])
    assert len(entries) == tiny_10x.adata.X.nnz == 19
    assert (entries[:, 2] > 0).all()  # no explicit zeros
    order = np.lexsort((entries[:, 0], entries[:, 1]))  # sorted by barcode, then feature
    np.testing.assert_array_equal(order, np.arange(19))
    dense = np.zeros((8, 6))
    dense[entries[:, 0] - 1, entries[:, 1] - 1] = entries[:, 2]
    np.testing.assert_array_equal(dense.T, tiny_10x.adata.X.toarray())
    features = gzip.decompress((folder / "features.tsv.gz").read_bytes()).decode()
    assert features.splitlines()[2] == "ENSG00000000002\tCD3E\tGene Expression"
    assert features.splitlines()[7] == "CD19_ab\tCD19_TotalSeqB\tAntibody Capture"
    barcodes = gzip.decompress((folder / "barcodes.tsv.gz").read_bytes()).decode()
    assert barcodes == "".join(b + "\n" for b in tiny_10x.adata.obs_names)


def test_v2_mtx_bytes(tiny_10x):
    folder = tiny_10x.v2_mtx
    assert sorted(p.name for p in folder.iterdir()) == ["barcodes.tsv", "genes.tsv", "matrix.mtx"]
    text = (folder / "matrix.mtx").read_text()
    assert text.startswith("%%MatrixMarket matrix coordinate integer general\n%\n6 6 13\n")
    assert (folder / "genes.tsv").read_text().splitlines()[0] == "ENSG00000000000\tCD3E"


def test_h5_layouts(tiny_10x):
    with h5py.File(tiny_10x.v3_h5) as f:
        assert f.attrs["filetype"] == "matrix"
        m = f["matrix"]
        assert m["shape"][()].tolist() == [8, 6]
        assert m["data"].dtype == np.int32
        assert m["indices"].dtype == np.int64
        assert m["data"].compression == "gzip"
        assert m["features/name"].dtype.kind == "S"
        assert m["features/_all_tag_keys"][()].tolist() == [b"genome"]
        assert set(m["features"]) == {"_all_tag_keys", "feature_type", "genome", "id", "name"}
    with h5py.File(tiny_10x.v2_h5) as f:
        assert list(f) == ["GRCh38"]
        assert set(f["GRCh38"]) == {
            "barcodes",
            "data",
            "gene_names",
            "genes",
            "indices",
            "indptr",
            "shape",
        }


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("kind", ["h5", "mtx"])
def test_round_trip_and_scanpy_reads_it(
    tiny_10x, tmp_path, same_10x, read_scanpy_h5, version, kind
):
    source = sd.io.read_10x_h5(tiny_10x.v3_h5)  # names from a read: unique, "-1" suffixes
    path = tmp_path / ("out.h5" if kind == "h5" else "out")
    if kind == "h5":
        sd.io.write_10x_h5(source, path, version=version)
        ours, ref = sd.io.read_10x_h5(path), read_scanpy_h5(path)
    else:
        sd.io.write_10x_mtx(source, path, version=version)
        ours, ref = sd.io.read_10x_mtx(path), sc.read_10x_mtx(path)
    same_10x(ours, source, columns=("gene_ids", "feature_types"))
    same_10x(ours, ref)


@pytest.mark.parametrize("kind", ["h5", "mtx"])
def test_output_is_reproducible(tiny_10x, tmp_path, kind):
    adata = tiny_10x.adata
    paths = [tmp_path / f"{i}{'.h5' if kind == 'h5' else ''}" for i in range(2)]
    for path in paths:
        if kind == "h5":
            sd.io.write_10x_h5(adata, path)
        else:
            sd.io.write_10x_mtx(adata, path)
    assert _sha(paths[0]) == _sha(paths[1])
    existing = tiny_10x.v3_h5 if kind == "h5" else tiny_10x.v3_mtx
    assert _sha(paths[0]) == _sha(existing)


def test_every_input_layout_writes_the_same_bytes(tiny_10x, tmp_path, matrix_format, count_dtype):
    adata = tiny_10x.adata.copy()
    adata.X = matrix_format(adata.X.astype(count_dtype))
    path = tmp_path / "x.h5"
    sd.io.write_10x_h5(adata, path)
    assert _sha(path) == _sha(tiny_10x.v3_h5)


def test_input_left_untouched_and_explicit_zeros_dropped(tiny_10x, tmp_path):
    X = sparse.csr_matrix(tiny_10x.adata.X, copy=True)
    X.data[0] = 0  # an explicit zero, which Cell Ranger never writes
    X.indices[:2] = X.indices[:2][::-1].copy()  # unsorted within a row
    X.data[:2] = X.data[:2][::-1].copy()
    adata = tiny_10x.adata.copy()
    adata.X = X
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    sd.io.write_10x_mtx(adata, tmp_path / "m")
    for a, b in zip(before, (X.data, X.indices, X.indptr), strict=True):
        np.testing.assert_array_equal(a, b)
    back = sd.io.read_10x_mtx(tmp_path / "m", gex_only=False)
    assert back.X.nnz == X.nnz - 1
    np.testing.assert_array_equal(back.X.toarray(), X.toarray())


def test_layer_and_default_names(tmp_path):
    adata = ad.AnnData(
        X=np.full((2, 3), 0.5, dtype=np.float32),
        layers={"counts": np.array([[1, 0, 2], [0, 3, 0]])},
    )
    adata.obs_names = ["c1", "c2"]
    adata.var_names = ["A", "B", "C"]
    sd.io.write_10x_h5(adata, tmp_path / "x.h5", layer="counts")
    back = sd.io.read_10x_h5(tmp_path / "x.h5")
    np.testing.assert_array_equal(back.X.toarray(), adata.layers["counts"])
    assert list(back.var["gene_ids"]) == ["A", "B", "C"]  # ids default to var_names
    assert set(back.var["feature_types"]) == {"Gene Expression"}
    assert set(back.var["genome"]) == {"unknown"}


def test_overwrite(tiny_10x):
    with pytest.raises(FileExistsError, match=f"{_esc(tiny_10x.v3_h5)}.* already exists"):
        sd.io.write_10x_h5(tiny_10x.adata, tiny_10x.v3_h5)
    path = tiny_10x.v3_mtx / "matrix.mtx.gz"
    with pytest.raises(FileExistsError, match=f"{_esc(path)}.* already exists"):
        sd.io.write_10x_mtx(tiny_10x.adata, tiny_10x.v3_mtx)
    sd.io.write_10x_h5(tiny_10x.adata[:2].copy(), tiny_10x.v3_h5, overwrite=True)
    assert sd.io.read_10x_h5(tiny_10x.v3_h5).n_obs == 2
    assert not list(tiny_10x.v3_h5.parent.glob(".*partial"))


def test_non_integer_counts(tiny_10x, tmp_path):
    adata = tiny_10x.adata.copy()
    adata.X.data[3] = 1.5
    with pytest.raises(ValueError, match=r"`adata\.X` holds non-integer values .*1\.5"):
        sd.io.write_10x_h5(adata, tmp_path / "x.h5")
    with pytest.raises(ValueError, match=r"`adata\.X` holds non-integer values"):
        sd.io.write_10x_mtx(adata, tmp_path / "m")
    assert not (tmp_path / "x.h5").exists()
    assert not (tmp_path / "m").exists()


def test_negative_counts(tiny_10x, tmp_path):
    adata = tiny_10x.adata.copy()
    adata.X.data[0] = -1
    with pytest.raises(ValueError, match=r"holds negative values .*cell 'AAACCTGAGAAACCAT-1'"):
        sd.io.write_10x_mtx(adata, tmp_path / "m")


def test_v2_refuses_other_feature_types(tiny_10x, tmp_path):
    with pytest.raises(
        ValueError, match=r"v2 files hold gene expression only.*'Antibody Capture'"
    ):
        sd.io.write_10x_h5(tiny_10x.adata, tmp_path / "x.h5", version=2)


def test_bad_version(tiny_10x, tmp_path):
    with pytest.raises(ValueError, match="`version=4` is not valid"):
        sd.io.write_10x_mtx(tiny_10x.adata, tmp_path / "m", version=4)


def test_duplicated_barcodes(tiny_10x, tmp_path):
    adata = tiny_10x.adata.copy()
    adata.obs_names = ["A", "A", "B", "C", "D", "E"]
    with pytest.raises(ValueError, match="barcode 'A' more than once"):
        sd.io.write_10x_h5(adata, tmp_path / "x.h5")


def test_tab_in_name(tiny_10x, tmp_path):
    adata = tiny_10x.adata.copy()
    adata.var["gene_symbols"] = ["A\tB", *adata.var["gene_symbols"][1:]]
    with pytest.raises(ValueError, match=r"gene names must be .*free of tabs"):
        sd.io.write_10x_mtx(adata, tmp_path / "m")


def test_not_anndata(tmp_path):
    with pytest.raises(TypeError, match="must be an AnnData"):
        sd.io.write_10x_h5(np.eye(2), tmp_path / "x.h5")


def test_folder_is_a_file(tiny_10x):
    with pytest.raises(ValueError, match=f"{_esc(tiny_10x.v3_h5)}.* is a file"):
        sd.io.write_10x_mtx(tiny_10x.adata, tiny_10x.v3_h5)


@pytest.mark.parametrize(("first", "second"), [(2, 3), (3, 2)])
def test_mtx_overwrite_removes_the_other_layout(tiny_10x, tmp_path, first, second):
    """v3 written over v2 (or back) leaves no file a reader would mix with the new ones."""
    folder = tmp_path / "m"
    old, new = tiny_10x.gex[:2].copy(), tiny_10x.gex[2:].copy()
    sd.io.write_10x_mtx(old, folder, version=first)
    (folder / "notes.txt").write_text("mine")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(FileExistsError, match=f"{_esc(folder)}.* holds 'matrix.mtx.*overwrite"):
        sd.io.write_10x_mtx(new, folder, version=second)
    assert sorted(p.name for p in folder.iterdir()) == before
    sd.io.write_10x_mtx(new, folder, version=second, overwrite=True)
    gz = ".gz" if second == 3 else ""
    expected = {f"matrix.mtx{gz}", f"{'features' if gz else 'genes'}.tsv{gz}", f"barcodes.tsv{gz}"}
    assert {p.name for p in folder.iterdir()} == {*expected, "notes.txt"}
    back = sd.io.read_10x_mtx(folder)
    assert list(back.obs_names) == list(new.obs_names)
    np.testing.assert_array_equal(back.X.toarray(), new.X.toarray())


def test_h5_onto_a_folder_does_not_suggest_overwrite(tiny_10x):
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=f"{_esc(tiny_10x.v3_mtx)}' is a folder") as exc:
            sd.io.write_10x_h5(tiny_10x.adata, tiny_10x.v3_mtx, overwrite=overwrite)
        assert "pass `overwrite=True`" not in str(exc.value)
    assert (tiny_10x.v3_mtx / "matrix.mtx.gz").is_file()


def test_existing_target_is_checked_before_the_matrix(tiny_10x, monkeypatch):
    """An existing output is refused before the counts are validated and copied."""
    import scdropout.io._write as write_module

    def no_copy(*args, **kwargs):
        msg = "the matrix was checked before the target"
        raise AssertionError(msg)

    monkeypatch.setattr(write_module, "_Counts", no_copy)
    with pytest.raises(FileExistsError, match="already exists"):
        sd.io.write_10x_h5(tiny_10x.adata, tiny_10x.v3_h5)
    with pytest.raises(FileExistsError, match="already exists"):
        sd.io.write_10x_mtx(tiny_10x.adata, tiny_10x.v3_mtx)
