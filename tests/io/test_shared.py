"""Exact agreement with scanpy's readers on the real 10X files in ../shared/data/10x/."""

from __future__ import annotations

import pytest
import scanpy as sc

import scdropout as sd

pytestmark = pytest.mark.shared

MTX_FOLDERS = [
    "scanpy_3.0.0/filtered_feature_bc_matrix",  # v3, gene expression only
    "scvi_pbmc_10k_protein_v3/filtered_feature_bc_matrix",  # v3, with antibody capture
    "seurat_testdata_cr3.0",  # v3, with antibody capture
    "seurat_testdata_v2",  # v2, every gene id "ENSGXXXXXX"
    "scanpy_1.2.0/filtered_gene_bc_matrices/hg19_chr21",  # v2
]
H5_FILES = [
    ("scanpy_3.0.0/filtered_feature_bc_matrix.h5", {}),
    ("scanpy_3.0.0/filtered_feature_bc_matrix.h5", {"gex_only": False}),
    ("scanpy_3.0.0/filtered_feature_bc_matrix.h5", {"genome": "GRCh38_chr21"}),
    ("scanpy_1.2.0/filtered_gene_bc_matrices_h5.h5", {}),
    ("scanpy_1.2.0/multiple_genomes.h5", {"genome": "hg19_chr21"}),
    ("scanpy_1.2.0/multiple_genomes.h5", {"genome": "another_genome"}),
]


@pytest.fixture(scope="module")
def tenx(shared):
    return shared / "data" / "10x"


def _columns(ref, candidates=("gene_ids", "gene_symbols", "feature_types", "genome")):
    return [c for c in candidates if c in ref.var]


@pytest.mark.parametrize("gex_only", [True, False])
@pytest.mark.parametrize("folder", MTX_FOLDERS)
def test_mtx_matches_scanpy(tenx, same_10x, folder, gex_only):
    ours = sd.io.read_10x_mtx(tenx / folder, gex_only=gex_only)
    ref = sc.read_10x_mtx(tenx / folder, gex_only=gex_only)
    same_10x(ours, ref, columns=_columns(ref))
    assert ours.var_names.is_unique


@pytest.mark.parametrize("folder", [f for f in MTX_FOLDERS if "seurat_testdata_v2" not in f])
def test_mtx_gene_ids_match_scanpy(tenx, same_10x, folder):
    ours = sd.io.read_10x_mtx(tenx / folder, var_names="gene_ids", gex_only=False)
    ref = sc.read_10x_mtx(tenx / folder, var_names="gene_ids", gex_only=False)
    same_10x(ours, ref, columns=_columns(ref))


def test_gex_only_drops_antibodies(tenx):
    folder = tenx / "scvi_pbmc_10k_protein_v3/filtered_feature_bc_matrix"
    full = sd.io.read_10x_mtx(folder, gex_only=False)
    gex = sd.io.read_10x_mtx(folder)
    assert full.var["feature_types"].value_counts().to_dict() == {
        "Gene Expression": 100,
        "Antibody Capture": 17,
    }
    assert gex.n_vars == 100
    assert set(gex.var["feature_types"]) == {"Gene Expression"}


@pytest.mark.parametrize(("file", "kw"), H5_FILES)
def test_h5_matches_scanpy(tenx, same_10x, read_scanpy_h5, file, kw):
    ours = sd.io.read_10x_h5(tenx / file, **kw)
    ref = read_scanpy_h5(tenx / file, **kw)
    same_10x(ours, ref, columns=_columns(ref))


def test_h5_and_mtx_of_one_run_agree(tenx, same_10x):
    h5 = sd.io.read_10x_h5(tenx / "scanpy_3.0.0/filtered_feature_bc_matrix.h5")
    mtx = sd.io.read_10x_mtx(tenx / "scanpy_3.0.0/filtered_feature_bc_matrix")
    same_10x(h5, mtx, columns=("gene_ids", "feature_types"))


def test_multiple_genomes_need_a_choice(tenx):
    path = tenx / "scanpy_1.2.0/multiple_genomes.h5"
    with pytest.raises(ValueError, match=r"holds 2 genomes \['another_genome', 'hg19_chr21'\]"):
        sd.io.read_10x_h5(path)
    with pytest.raises(ValueError, match=r"genomes present: \['another_genome', 'hg19_chr21'\]"):
        sd.io.read_10x_h5(path, genome="mm10")


@pytest.mark.parametrize(
    ("folder", "reference"),
    [
        ("scanpy_3.0.0", "scanpy_3.0.0/filtered_feature_bc_matrix.h5"),
        ("scanpy_1.2.0", "scanpy_1.2.0/filtered_gene_bc_matrices_h5.h5"),
    ],
)
def test_read_10x_on_outs_like_folders(tenx, same_10x, read_scanpy_h5, folder, reference):
    same_10x(sd.io.read_10x(tenx / folder), read_scanpy_h5(tenx / reference))


def test_round_trip_through_our_writers(tenx, tmp_path, same_10x):
    source = sd.io.read_10x_mtx(
        tenx / "scvi_pbmc_10k_protein_v3/filtered_feature_bc_matrix", gex_only=False
    )
    sd.io.write_10x_h5(source, tmp_path / "x.h5")
    sd.io.write_10x_mtx(source, tmp_path / "m")
    cols = ("gene_ids", "feature_types")
    same_10x(sd.io.read_10x_h5(tmp_path / "x.h5", gex_only=False), source, columns=cols)
    same_10x(sd.io.read_10x_mtx(tmp_path / "m", gex_only=False), source, columns=cols)
