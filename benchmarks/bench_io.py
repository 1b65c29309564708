"""10X readers, scdropout vs scanpy, on a simulated 10,000 cells x 20,000 genes sample.

Run from the repository root::

    python benchmarks/bench_io.py

The sample is simulated once and written with our writers (Cell Ranger v3 .h5 and mtx.gz folder)
under ``benchmarks/_out/bench_io/`` (gitignored), then reused. Each reader runs three times and
the best wall time counts. The table is printed and written into ``benchmarks/RESULTS.md``
between the ``bench_io`` markers (the rest of that file is left alone).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from importlib.metadata import version
from pathlib import Path

import scanpy as sc

import scdropout as sd

HERE = Path(__file__).resolve().parent
OUT = HERE / "_out" / "bench_io"
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- bench_io:start -->", "<!-- bench_io:end -->"
PARAMS = {"n_cells": 10_000, "n_genes": 20_000, "library_size": 5000, "true_counts": False}
REPEATS = 3


def prepare() -> tuple[Path, Path, int]:
    """Simulate and write the sample unless a complete copy with the same parameters exists."""
    h5 = OUT / "filtered_feature_bc_matrix.h5"
    mtx = OUT / "filtered_feature_bc_matrix"
    stamp = OUT / "params.json"
    wanted = json.dumps(PARAMS, sort_keys=True)
    if not (stamp.is_file() and stamp.read_text() == wanted):
        print("simulating and writing the benchmark sample (once) ...", flush=True)
        adata = sd.datasets.synthetic(**PARAMS)
        sd.io.write_10x_h5(adata, h5, overwrite=True)
        sd.io.write_10x_mtx(adata, mtx, overwrite=True)
        stamp.write_text(wanted)  # last, so an interrupted run is redone
    nnz = sd.io.read_10x_h5(h5).X.nnz
    return h5, mtx, nnz


def best_of(*fns: Callable[[], object]) -> list[float]:
    """Best wall time of each function over REPEATS rounds, run interleaved so that load from
    other processes on the machine hits both readers alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(REPEATS):
        for fn, t in zip(fns, times, strict=True):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def check_agreement(ours, theirs) -> None:
    """Fail loudly if the two readers disagree, so no timing is reported for a wrong result."""
    assert ours.shape == theirs.shape
    mine, ref = ours.X, theirs.X.tocsr()
    assert (mine != ref).nnz == 0
    assert list(ours.obs_names) == list(theirs.obs_names)
    assert list(ours.var_names) == list(theirs.var_names)
    assert list(ours.var["gene_ids"]) == list(theirs.var["gene_ids"])


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.iterdir() if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def main() -> str:
    sd.settings.verbosity = 0
    sc.settings.verbosity = 0
    h5, mtx, nnz = prepare()
    load = os.getloadavg()[0]
    cases = [
        ("v3 .h5", h5, sd.io.read_10x_h5, sc.read_10x_h5),
        ("v3 mtx.gz folder", mtx, sd.io.read_10x_mtx, sc.read_10x_mtx),
    ]
    rows = []
    for label, path, ours, theirs in cases:
        check_agreement(ours(path), theirs(path))
        t_ours, t_theirs = best_of(partial(ours, path), partial(theirs, path))
        rows.append(
            f"| {label} | {size_mb(path):.1f} | {t_ours:.2f} | {t_theirs:.2f} | "
            f"{t_theirs / t_ours:.2f}x |"
        )
    versions = ", ".join(
        f"{p} {version(p)}" for p in ("scdropout", "scanpy", "anndata", "scipy", "h5py")
    )
    table = "\n".join(
        [
            "## 10X readers: `scdropout.io` vs scanpy",
            "",
            f"`python benchmarks/bench_io.py`, {date.today().isoformat()}: "
            f"`sd.datasets.synthetic({', '.join(f'{k}={v!r}' for k, v in PARAMS.items())})` "
            f"({PARAMS['n_cells']:,} cells x {PARAMS['n_genes']:,} genes, {nnz:,} non-zeros), "
            "written with `sd.io.write_10x_h5` / `write_10x_mtx` (Cell Ranger v3 layout). "
            f"Wall seconds, best of {REPEATS} runs interleaved with the other reader, whole call (file to AnnData); both readers return "
            f"the same values and names. {os.cpu_count()} CPUs (load average {load:.1f} when "
            f"the run started), {platform.machine()}, Python {platform.python_version()}; "
            f"{versions}.",
            "",
            "| input | MB on disk | scdropout (s) | scanpy (s) | scanpy / scdropout |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    write_section(table)
    return table


def write_section(table: str) -> None:
    """Put ``table`` between the markers in RESULTS.md, creating the file or section if needed."""
    block = f"{START}\n{table}\n{END}"
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
