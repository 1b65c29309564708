"""The shipped example in data/example_10x/: what it holds, its checksums, its regeneration."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import re
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import scdropout as sd
from scdropout.datasets import _example

DATA = Path(__file__).resolve().parents[2] / "data"
EXAMPLE = DATA / "example_10x"


def _load_make_example():
    spec = importlib.util.spec_from_file_location("make_example", DATA / "make_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shas(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


@pytest.fixture(scope="module")
def truth():
    return sd.datasets.synthetic(**_load_make_example().PARAMS)


@pytest.mark.parametrize("fmt", ["h5", "mtx"])
def test_example_is_the_simulation(truth, fmt, same_10x):
    adata = sd.datasets.example(fmt=fmt)
    assert adata.shape == (1500, 2000)
    same_10x(adata, truth, columns=("gene_ids", "feature_types"))
    assert list(adata.obs["group"].cat.categories) == ["0", "1", "2", "3", "4"]
    assert (adata.obs["group"] == truth.obs["group"]).all()
    assert adata.obs["group"].value_counts().tolist() == [300] * 5


def test_readme_lists_the_shipped_checksums():
    readme = (DATA / "README.md").read_text()
    listed = {
        name.removeprefix("example_10x/"): digest
        for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    }
    assert listed == _shas(EXAMPLE)
    assert sum(p.stat().st_size for p in EXAMPLE.rglob("*") if p.is_file()) < 6e6


def test_regeneration_reproduces_the_shipped_files(tmp_path):
    fresh = _load_make_example().make(tmp_path)
    shipped = _shas(EXAMPLE)
    assert fresh.keys() == shipped.keys()
    readme = (DATA / "README.md").read_text()
    recorded = re.search(r"made with zlib (\S+) and HDF5 (\S+) ", readme).groups()
    if (zlib.ZLIB_RUNTIME_VERSION, h5py.version.hdf5_version) == recorded:
        assert fresh == shipped
    # whatever the library versions, the content is the same
    for name in fresh:
        ours, ref = (tmp_path / name).read_bytes(), (EXAMPLE / name).read_bytes()
        if name.endswith(".gz"):
            assert gzip.decompress(ours) == gzip.decompress(ref)
        elif name.endswith(".csv"):
            assert ours == ref
    a = sd.io.read_10x_h5(tmp_path / "outs/filtered_feature_bc_matrix.h5")
    b = sd.io.read_10x_h5(EXAMPLE / "outs/filtered_feature_bc_matrix.h5")
    assert (a.X != b.X).nnz == 0
    assert list(a.obs_names) == list(b.obs_names)


def test_labels_file(truth):
    labels = pd.read_csv(EXAMPLE / "labels.csv", dtype=str)
    assert list(labels.columns) == ["barcode", "group"]
    assert list(labels["barcode"]) == list(truth.obs_names)
    np.testing.assert_array_equal(labels["group"], truth.obs["group"].astype(str))


def test_missing_data_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(_example, "_DATA_DIR", tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match=r"example data folder .*gone' does not exist"):
        sd.datasets.example()


def test_labels_not_covering_every_cell(monkeypatch, tmp_path):
    copy = tmp_path / "example_10x"
    shutil.copytree(EXAMPLE, copy)
    lines = (copy / "labels.csv").read_text().splitlines(keepends=True)
    (copy / "labels.csv").write_text("".join(lines[:-1]))
    monkeypatch.setattr(_example, "_DATA_DIR", copy)
    with pytest.raises(ValueError, match=r"labels\.csv' has no group for 1 barcode"):
        sd.datasets.example()


def test_bad_fmt():
    with pytest.raises(ValueError, match="`fmt='csv'` is not valid"):
        sd.datasets.example(fmt="csv")
