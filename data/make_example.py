"""Build ``data/example_10x/``: a simulated 10X sample in Cell Ranger v3 ``outs/`` layout.

Run from the repository root::

    python data/make_example.py

It simulates 1,500 cells x 2,000 genes in 5 planted groups with ``sd.datasets.synthetic`` and
writes them with ``sd.io.write_10x_h5`` / ``sd.io.write_10x_mtx`` as::

    data/example_10x/outs/filtered_feature_bc_matrix.h5
    data/example_10x/outs/filtered_feature_bc_matrix/{barcodes,features}.tsv.gz, matrix.mtx.gz
    data/example_10x/labels.csv   (barcode,group: the planted truth)

The output is byte-for-byte reproducible (gzip members without name or time, HDF5 datasets
without timestamps); it prints the sha256 of every file, as listed in ``data/README.md``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import scdropout as sd

HERE = Path(__file__).resolve().parent
PARAMS = {
    "n_cells": 1500,
    "n_genes": 2000,
    "n_groups": 5,
    "n_markers": 30,
    "library_size": 3000,
    "random_state": 0,
}
GENOME = "synthetic"


def make(out: Path = HERE / "example_10x") -> dict[str, str]:
    """Write the example into ``out`` (replacing what is there); return {relative path: sha256}."""
    adata = sd.datasets.synthetic(**PARAMS)
    outs = out / "outs"
    h5 = outs / "filtered_feature_bc_matrix.h5"
    sd.io.write_10x_h5(adata, h5, genome=GENOME, overwrite=True)
    sd.io.write_10x_mtx(adata, outs / "filtered_feature_bc_matrix", overwrite=True)
    rows = zip(adata.obs_names, adata.obs["group"], strict=True)
    labels = "barcode,group\n" + "".join(f"{b},{g}\n" for b, g in rows)
    (out / "labels.csv").write_bytes(labels.encode())
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def main() -> None:
    """Regenerate the example and print the sha256 of each file."""
    for name, digest in make().items():
        print(f"{digest}  example_10x/{name}")


if __name__ == "__main__":
    main()
