"""read_10x_mtx: Cell Ranger v2/v3 matrix folders, agreement with scanpy, and bad input."""

from __future__ import annotations

import gzip
import logging
import re
import shutil

import numpy as np
import pytest
import scanpy as sc

import scdropout as sd

# check_counts shows the value as repr() of a numpy scalar: "np.int64(-3)" or "-3"
NUM = r"(?:np\.\w+\()?"
GEX6 = ["CD3E", "MS4A1", "CD3E-1", "NKG7", "LYZ", "SILENT"]


def test_v3_all_features(tiny_10x):
    adata = sd.io.read_10x_mtx(tiny_10x.v3_mtx, gex_only=False)
    assert adata.X.format == "csr"
    assert adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), tiny_10x.adata.X.toarray())
    assert list(adata.obs_names) == list(tiny_10x.adata.obs_names)
    # duplicates get -1, -2 in file order, over all features (scanpy's rule)
    assert list(adata.var_names) == [*GEX6, "CD3E-2", "CD19_TotalSeqB"]
    assert list(adata.var["gene_ids"]) == list(tiny_10x.adata.var["gene_ids"])
    assert list(adata.var["feature_types"]) == list(tiny_10x.adata.var["feature_types"])


def test_v3_gex_only(tiny_10x):
    adata = sd.io.read_10x_mtx(tiny_10x.v3_mtx)
    assert list(adata.var_names) == GEX6
    assert set(adata.var["feature_types"]) == {"Gene Expression"}
    np.testing.assert_array_equal(adata.X.toarray(), tiny_10x.gex.X.toarray())


def test_v2_folder(tiny_10x):
    adata = sd.io.read_10x_mtx(tiny_10x.v2_mtx)
    np.testing.assert_array_equal(adata.X.toarray(), tiny_10x.gex.X.toarray())
    assert list(adata.var_names) == GEX6
    assert list(adata.var["feature_types"]) == ["Gene Expression"] * 6
    assert adata.X[3].nnz == 0  # the empty cell stays, as an empty row
    assert adata.X[4, 4] == 1234


def test_var_names_gene_ids(tiny_10x):
    adata = sd.io.read_10x_mtx(tiny_10x.v3_mtx, var_names="gene_ids", gex_only=False)
    assert list(adata.var_names) == list(tiny_10x.adata.var["gene_ids"])
    assert list(adata.var["gene_symbols"]) == list(tiny_10x.adata.var["gene_symbols"])


def test_make_unique_false_keeps_duplicates(tiny_10x):
    with pytest.warns(UserWarning, match="not unique"):
        adata = sd.io.read_10x_mtx(tiny_10x.v2_mtx, make_unique=False)
    assert list(adata.var_names) == ["CD3E", "MS4A1", "CD3E", "NKG7", "LYZ", "SILENT"]


@pytest.mark.parametrize("layout", ["v2_mtx", "v3_mtx"])
@pytest.mark.parametrize("gex_only", [True, False])
@pytest.mark.parametrize("var_names", ["gene_symbols", "gene_ids"])
def test_agrees_with_scanpy(tiny_10x, same_10x, layout, gex_only, var_names):
    path = getattr(tiny_10x, layout)
    ours = sd.io.read_10x_mtx(path, gex_only=gex_only, var_names=var_names)
    ref = sc.read_10x_mtx(path, gex_only=gex_only, var_names=var_names)
    columns = [c for c in ("gene_ids", "gene_symbols", "feature_types") if c in ref.var]
    same_10x(ours, ref, columns=columns)


def test_compression_detected_from_content(tiny_10x, tmp_path, same_10x):
    """A gunzipped v3 folder and a gzipped v2 folder read like the originals."""
    plain_v3 = tmp_path / "plain_v3"
    plain_v3.mkdir()
    for f in tiny_10x.v3_mtx.iterdir():
        (plain_v3 / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
    gz_v2 = tmp_path / "gz_v2"
    gz_v2.mkdir()
    for f in tiny_10x.v2_mtx.iterdir():
        (gz_v2 / f"{f.name}.gz").write_bytes(gzip.compress(f.read_bytes()))
    cols = ("gene_ids", "feature_types")
    same_10x(sd.io.read_10x_mtx(plain_v3), sd.io.read_10x_mtx(tiny_10x.v3_mtx), columns=cols)
    same_10x(sd.io.read_10x_mtx(gz_v2), sd.io.read_10x_mtx(tiny_10x.v2_mtx), columns=cols)


def test_real_field_with_integral_values(tiny_10x):
    mtx = tiny_10x.v2_mtx / "matrix.mtx"
    lines = mtx.read_text().splitlines()
    lines[0] = lines[0].replace("integer", "real")
    body = [" ".join([*ln.split()[:2], f"{float(ln.split()[2]):.1f}"]) for ln in lines[3:]]
    mtx.write_text("\n".join([*lines[:3], *body]) + "\n")
    assert "1234.0" in mtx.read_text()
    adata = sd.io.read_10x_mtx(tiny_10x.v2_mtx)
    np.testing.assert_array_equal(adata.X.toarray(), tiny_10x.gex.X.toarray())
    assert adata.X.dtype == np.float32


def test_logs_one_line(tiny_10x):
    records = []
    handler = logging.Handler(level=logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("scdropout")
    logger.addHandler(handler)
    try:
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)
    finally:
        logger.removeHandler(handler)
    lines = [r.getMessage() for r in records]
    assert len(lines) == 1
    assert re.fullmatch(
        r"read 6 cells x 6 genes from .*v3_mtx \(v3 mtx\.gz, \d+\.\d\ds\)", lines[0]
    )


# --- bad input: every error names the file and what is wrong -------------------------------


def _rewrite_gz(path, edit):
    path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes()).decode()).encode()))


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sd.io.read_10x_mtx("/nonexistent/folder")


def test_path_is_a_file(tiny_10x):
    path = tiny_10x.v3_mtx / "matrix.mtx.gz"
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.* is a file"):
        sd.io.read_10x_mtx(path)


def test_missing_file_lists_folder(tiny_10x):
    (tiny_10x.v3_mtx / "barcodes.tsv.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"no barcodes\.tsv\[\.gz\].*holds features"):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)


def test_features_count_disagrees(tiny_10x):
    path = tiny_10x.v3_mtx / "features.tsv.gz"
    _rewrite_gz(path, lambda s: "".join(s.splitlines(keepends=True)[:-1]))
    with pytest.raises(ValueError, match=r"declares 8 features but .*features\.tsv\.gz' lists 7"):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)


def test_barcodes_count_disagrees(tiny_10x):
    path = tiny_10x.v2_mtx / "barcodes.tsv"
    path.write_text(path.read_text() + "TTTGTCATCTTTAGGG-1\n")
    with pytest.raises(ValueError, match=r"declares 6 barcodes but .*barcodes\.tsv' lists 7"):
        sd.io.read_10x_mtx(tiny_10x.v2_mtx)


def test_truncated_gzip_matrix(tiny_10x):
    path = tiny_10x.v3_mtx / "matrix.mtx.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 12])
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.* truncated or corrupt gzip"):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)


def test_corrupt_gzip_features(tiny_10x):
    path = tiny_10x.v3_mtx / "features.tsv.gz"
    raw = bytearray(path.read_bytes())
    raw[12:40] = b"\xff" * 28
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.* truncated or corrupt gzip"):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)


@pytest.mark.parametrize(
    "banner",
    [
        "%%MatrixMarket matrix array integer general",
        "%%MatrixMarket matrix coordinate pattern general",
        "%%MatrixMarket matrix coordinate integer symmetric",
        "%%NotMatrixMarket",
    ],
)
def test_malformed_header(tiny_10x, banner):
    path = tiny_10x.v2_mtx / "matrix.mtx"
    path.write_text(banner + "\n" + path.read_text().split("\n", 1)[1])
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.* has the header"):
        sd.io.read_10x_mtx(tiny_10x.v2_mtx)


def test_malformed_size_line(tiny_10x):
    path = tiny_10x.v2_mtx / "matrix.mtx"
    text = path.read_text().replace("\n6 6 ", "\n6 six ", 1)
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.* size line '6 six"):
        sd.io.read_10x_mtx(tiny_10x.v2_mtx)


def test_fewer_entries_than_declared(tiny_10x):
    path = tiny_10x.v2_mtx / "matrix.mtx"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.* not a valid MatrixMarket"):
        sd.io.read_10x_mtx(tiny_10x.v2_mtx)


def test_negative_count(tiny_10x):
    path = tiny_10x.v2_mtx / "matrix.mtx"
    path.write_text(path.read_text().replace("\n5 5 1234\n", "\n5 5 -1234\n"))
    pattern = (
        rf"{re.escape(str(tiny_10x.v2_mtx))}.* negative values \(first {NUM}-1234\)?, "
        r"cell 'AAACCTGCAAGCCGCT-1', gene 'LYZ'\)"
    )
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_mtx(tiny_10x.v2_mtx)


def test_non_integer_count(tiny_10x):
    path = tiny_10x.v2_mtx / "matrix.mtx"
    text = path.read_text().replace("integer", "real", 1).replace("\n5 5 1234\n", "\n5 5 2.5\n")
    path.write_text(text)
    pattern = rf"{re.escape(str(tiny_10x.v2_mtx))}.* non-integer values \(first {NUM}2\.5\)?, cell"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_mtx(tiny_10x.v2_mtx)


def test_duplicated_barcode(tiny_10x):
    path = tiny_10x.v3_mtx / "barcodes.tsv.gz"
    _rewrite_gz(path, lambda s: s.replace("AAACCTGAGAAACCGC-1", "AAACCTGAGAAACCAT-1"))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.* 'AAACCTGAGAAACCAT-1' more"):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)


def test_feature_file_with_one_column(tiny_10x):
    path = tiny_10x.v2_mtx / "genes.tsv"
    path.write_text("".join(line.split("\t")[0] + "\n" for line in path.read_text().splitlines()))
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.* has 1 column"):
        sd.io.read_10x_mtx(tiny_10x.v2_mtx)


def test_gex_only_without_gene_expression(tiny_10x):
    path = tiny_10x.v3_mtx / "features.tsv.gz"
    _rewrite_gz(path, lambda s: s.replace("Gene Expression", "Custom"))
    with pytest.raises(ValueError, match=r"features\.tsv\.gz' has no 'Gene Expression'"):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)
    assert sd.io.read_10x_mtx(tiny_10x.v3_mtx, gex_only=False).n_vars == 8


def test_bad_var_names(tiny_10x):
    with pytest.raises(ValueError, match="`var_names='symbols'` is not valid"):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx, var_names="symbols")


def test_matrix_folder_copy_is_independent(tiny_10x, tmp_path, same_10x):
    """Reading does not depend on the folder's name or location."""
    copy = tmp_path / "elsewhere" / "x"
    shutil.copytree(tiny_10x.v3_mtx, copy)
    same_10x(sd.io.read_10x_mtx(copy), sd.io.read_10x_mtx(tiny_10x.v3_mtx))


def test_plain_text_named_gz_reads_by_content(tiny_10x, tmp_path, same_10x):
    """A folder of plain-text files named .gz (as some tools write) reads like the original."""
    named_gz = tmp_path / "named_gz"
    named_gz.mkdir()
    for f in tiny_10x.v3_mtx.iterdir():
        (named_gz / f.name).write_bytes(gzip.decompress(f.read_bytes()))
    assert (named_gz / "matrix.mtx.gz").read_bytes().startswith(b"%%MatrixMarket")
    cols = ("gene_ids", "feature_types")
    same_10x(sd.io.read_10x_mtx(named_gz), sd.io.read_10x_mtx(tiny_10x.v3_mtx), columns=cols)


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ("matrix.mtx", r"'matrix\.mtx' and 'matrix\.mtx\.gz'"),
        ("barcodes.tsv", r"'barcodes\.tsv' and 'barcodes\.tsv\.gz'"),
        ("genes.tsv", r"'features\.tsv\.gz' and 'genes\.tsv'"),
    ],
)
def test_folder_mixing_two_versions_is_an_error(tiny_10x, extra, names):
    """A v2 file beside the v3 files could pair one run's matrix with another's barcodes."""
    (tiny_10x.v3_mtx / extra).write_bytes((tiny_10x.v2_mtx / extra).read_bytes())
    pattern = f"{re.escape(str(tiny_10x.v3_mtx))}' holds {names}: two versions of one file"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x(tiny_10x.v3_mtx)


def test_short_feature_line_names_the_line(tiny_10x):
    """A line missing its feature type must not read as a feature of type '' (and be dropped)."""
    path = tiny_10x.v3_mtx / "features.tsv.gz"
    _rewrite_gz(path, lambda s: s.replace("\tLYZ\tGene Expression\n", "\tLYZ\n"))
    pattern = f"{re.escape(str(path))}' line 5 has 2 column\\(s\\) where the other lines have 3"
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx)
    with pytest.raises(ValueError, match=pattern):
        sd.io.read_10x_mtx(tiny_10x.v3_mtx, gex_only=False)


def test_empty_trailing_field_is_not_a_short_line(tiny_10x):
    path = tiny_10x.v2_mtx / "genes.tsv"
    path.write_text("".join(f"{line}\t\n" for line in path.read_text().splitlines()))
    adata = sd.io.read_10x_mtx(tiny_10x.v2_mtx, gex_only=False)
    assert list(adata.var_names) == GEX6
