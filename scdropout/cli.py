"""Command line interface: ``scdropout info|genes ...``.

Each subcommand is a thin wrapper over public functions. Exit codes: 0 on success, 1 on a runtime
error (one line ``scdropout: error: ...`` on stderr; ``--debug`` shows the traceback), 2 on a usage
error (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import io, pp
from ._settings import settings
from ._version import __version__

PROG = "scdropout"


class _Step:
    """Report one pipeline step on stderr: its name, then its time when it ends."""

    def __init__(self, name: str, *, quiet: bool) -> None:
        self.name = name
        self.quiet = quiet

    def __enter__(self) -> _Step:
        self.t0 = time.perf_counter()
        if not self.quiet:
            print(f"[{PROG}] {self.name} ...", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.quiet and exc[0] is None:
            dt = time.perf_counter() - self.t0
            print(f"[{PROG}] {self.name}: done in {dt:.2f}s", file=sys.stderr, flush=True)


def _load(path: str, *, genome: str | None, quiet: bool) -> Any:
    """Read a 10X ``.h5``, an mtx folder, a Cell Ranger ``outs/`` folder or an ``.h5ad``."""
    p = Path(path)
    if not p.exists():
        msg = f"input {path!r} does not exist"
        raise FileNotFoundError(msg)
    with _Step(f"reading {path}", quiet=quiet):
        if p.suffix == ".h5ad":
            import anndata

            return anndata.read_h5ad(p)
        return io.read_10x(p, genome=genome) if genome else io.read_10x(p)


def _check_out(out: str, *, overwrite: bool) -> Path:
    p = Path(out)
    if p.suffix != ".h5ad":
        msg = f"--out {out!r} must end in .h5ad"
        raise ValueError(msg)
    if p.exists() and not overwrite:
        msg = f"--out {out!r} exists; pass --overwrite to replace it"
        raise FileExistsError(msg)
    if not p.parent.exists():
        msg = f"the folder of --out {out!r} does not exist"
        raise FileNotFoundError(msg)
    return p


def _write_h5ad(adata: Any, path: Path) -> None:
    """Write to a temporary name in the same folder, then rename: no partial file on failure."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        adata.write_h5ad(tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _summary(adata: Any, key: str) -> dict[str, Any]:
    """Collect the numbers ``info`` reports from a dropout_stats result."""
    lib = adata.obs[f"{key}_total_counts"].to_numpy()
    det = adata.obs[f"{key}_n_detected"].to_numpy()
    n_cells, n_genes = adata.shape
    zeros = float(adata.obs[f"{key}_zeros"].sum())
    exp_nb = float(adata.obs[f"{key}_expected_zeros"].sum())
    exp_pois = float(adata.obs[f"{key}_expected_zeros_poisson"].sum())
    qval = adata.var[f"{key}_qval"].to_numpy()
    excess = adata.var[f"{key}_excess"].to_numpy()
    uns = adata.uns[key]
    return {
        "cells": int(n_cells),
        "genes": int(n_genes),
        "genes_detected": int((adata.var[f"{key}_n_detected"].to_numpy() > 0).sum()),
        "sparsity": zeros / (n_cells * n_genes),
        "library_size": {
            "min": float(lib.min()),
            "median": float(np.median(lib)),
            "mean": float(lib.mean()),
            "max": float(lib.max()),
        },
        "genes_per_cell": {"median": float(np.median(det)), "mean": float(det.mean())},
        "zeros_observed": zeros,
        "zeros_expected_nb": exp_nb,
        "zeros_expected_poisson": exp_pois,
        "genes_excess_zeros_q05": int(np.sum((qval < 0.05) & (excess > 0))),
        "m3drop_K": float(uns["m3drop"]["K"]),
    }


def _print_summary(path: str, s: dict[str, Any]) -> None:
    lib, gpc = s["library_size"], s["genes_per_cell"]
    rows = [
        ("input", path),
        ("cells", f"{s['cells']:,}"),
        ("genes", f"{s['genes']:,} ({s['genes_detected']:,} detected in at least one cell)"),
        ("sparsity", f"{100 * s['sparsity']:.1f}% zeros"),
        (
            "library size",
            f"min {lib['min']:,.0f}, median {lib['median']:,.0f}, "
            f"mean {lib['mean']:,.0f}, max {lib['max']:,.0f}",
        ),
        ("genes per cell", f"median {gpc['median']:,.0f}, mean {gpc['mean']:,.1f}"),
        (
            "zeros observed / expected",
            f"{s['zeros_observed']:,.0f} observed; {s['zeros_expected_nb']:,.0f} expected under "
            f"the depth-adjusted NB, {s['zeros_expected_poisson']:,.0f} under Poisson",
        ),
        (
            "zero-inflated genes",
            f"{s['genes_excess_zeros_q05']:,} genes with more zeros than the NB expects "
            "(BH q < 0.05)",
        ),
        ("M3Drop K", f"{s['m3drop_K']:.3g}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def _cmd_info(args: argparse.Namespace) -> int:
    adata = _load(args.path, genome=args.genome, quiet=args.quiet)
    with _Step("dropout statistics", quiet=args.quiet):
        pp.dropout_stats(adata, layer=args.layer, n_jobs=args.n_jobs)
    s = _summary(adata, "dropout")
    if args.json:
        print(json.dumps(s, indent=2))
    else:
        _print_summary(args.path, s)
    return 0


def _cmd_genes(args: argparse.Namespace) -> int:
    out = _check_out(args.out, overwrite=args.overwrite)
    table = Path(args.table) if args.table else out.with_suffix(".genes.csv")
    if table.exists() and not args.overwrite:
        msg = f"--table {str(table)!r} exists; pass --overwrite to replace it"
        raise FileExistsError(msg)
    adata = _load(args.path, genome=args.genome, quiet=args.quiet)
    with _Step("dropout statistics", quiet=args.quiet):
        pp.dropout_stats(adata, layer=args.layer, n_jobs=args.n_jobs)
    fdr = None if args.n_top_genes is not None else args.fdr
    with _Step(f"dropout-aware gene selection ({args.flavor})", quiet=args.quiet):
        pp.dropout_genes(
            adata,
            flavor=args.flavor,
            n_top_genes=args.n_top_genes,
            fdr=fdr,
            layer=args.layer,
            n_jobs=args.n_jobs,
        )
    key = "dropout_genes"
    cols = [c for c in adata.var.columns if c.startswith(f"{key}_")]
    df = adata.var[cols].rename(columns=lambda c: c.removeprefix(f"{key}_"))
    df = df.sort_values("rank")
    with _Step(f"writing {out} and {table}", quiet=args.quiet):
        _write_h5ad(adata, out)
        tmp = table.with_name(f".{table.name}.partial-{os.getpid()}")
        df.to_csv(tmp, index_label="gene")
        tmp.replace(table)
    n_sel = int(adata.var[f"{key}_selected"].sum())
    print(f"{n_sel:,} of {adata.n_vars:,} genes selected ({args.flavor}); wrote {out} and {table}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Dropout-aware single-cell RNA-seq analysis of 10X samples.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "path", help="10X .h5, mtx folder (v2 or v3), Cell Ranger outs/ folder, or .h5ad"
    )
    common.add_argument("--layer", default=None, help="layer holding raw counts (default: X)")
    common.add_argument(
        "--genome", default=None, help="genome of a multi-genome Cell Ranger v2 .h5"
    )
    common.add_argument(
        "--n-jobs", type=int, default=None, help="threads for numba kernels (default: all)"
    )
    common.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    common.add_argument(
        "--verbose", action="store_true", help="also show the library's log (keys written, ...)"
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_info = sub.add_parser(
        "info",
        parents=[common],
        help="cells, genes, sparsity, library sizes and a zero-inflation summary",
        description="Summarise a sample: size, sparsity, library sizes, zero-inflation.",
    )
    p_info.add_argument("--json", action="store_true", help="print the summary as JSON")
    p_info.set_defaults(func=_cmd_info)

    p_genes = sub.add_parser(
        "genes",
        parents=[common],
        help="dropout statistics and dropout-aware gene selection, written to an .h5ad",
        description=(
            "Compute per-gene/per-cell dropout statistics and select genes whose dropout "
            "rate is informative; write the AnnData and a gene table."
        ),
    )
    p_genes.add_argument("--out", required=True, help="output .h5ad")
    p_genes.add_argument(
        "--table", default=None, help="gene table CSV (default: OUT with .genes.csv)"
    )
    p_genes.add_argument("--flavor", choices=["nbumi", "m3drop"], default="nbumi")
    p_genes.add_argument(
        "--n-top-genes", type=int, default=None, help="select this many top genes"
    )
    p_genes.add_argument(
        "--fdr", type=float, default=0.05, help="q-value threshold when --n-top-genes is not set"
    )
    p_genes.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p_genes.set_defaults(func=_cmd_genes)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line interface and return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    old_verbosity = settings.verbosity
    settings.verbosity = 1 if args.verbose and not args.quiet else 0
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI turns every error into one line
        if args.debug:
            traceback.print_exc()
        text = str(err).strip().strip("'\"") if isinstance(err, KeyError) else str(err)
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 1
    finally:
        settings.verbosity = old_verbosity
