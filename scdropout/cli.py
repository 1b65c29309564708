"""Command line interface: ``scdropout info|genes|cluster ...``.

Each subcommand is a thin wrapper over public functions. Exit codes: 0 on success, 1 on a runtime
error (one line ``scdropout: error: ...`` on stderr; ``--debug`` shows the traceback), 2 on a usage
error (argparse).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _keys, io, pp
from ._settings import settings
from ._version import __version__

PROG = "scdropout"


class _Step:
    """Report one pipeline step on stderr: its name, then its time when it ends."""

    def __init__(self, name: str, *, quiet: bool, timings: dict[str, float] | None = None) -> None:
        self.name = name
        self.quiet = quiet
        self.timings = timings

    def __enter__(self) -> _Step:
        self.t0 = time.perf_counter()
        if not self.quiet:
            print(f"[{PROG}] {self.name} ...", file=sys.stderr, flush=True)
        return self

    def __exit__(self, *exc: object) -> None:
        dt = time.perf_counter() - self.t0
        if self.timings is not None and exc[0] is None:
            self.timings[self.name] = dt
        if not self.quiet and exc[0] is None:
            print(f"[{PROG}] {self.name}: done in {dt:.2f}s", file=sys.stderr, flush=True)


def _as_flags(text: str) -> str:
    """Say what the io functions call `genome=` and `path=` in the words of the command line."""
    text = text.replace("leave `genome=None`", "leave out --genome")
    text = text.replace("with `genome=`", "with --genome")
    text = re.sub(r"`genome=('[^']*')`", r"--genome \1", text)
    return re.sub(r"`path=('[^']*')`", r"\1", text)


def _read_10x(path: Path, *, genome: str | None) -> Any:
    """:func:`io.read_10x`, with its errors naming command-line flags rather than arguments."""
    try:
        return io.read_10x(path, genome=genome) if genome else io.read_10x(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        text = str(err).strip("'\"") if isinstance(err, KeyError) else str(err)
        if _as_flags(text) == text:
            raise
        raise type(err)(_as_flags(text)) from err


def _check_inputs(paths: Sequence[str], *, layer: str | None) -> None:
    """Check, before anything is read, that every input exists and that --layer can apply."""
    for path in paths:
        if not Path(path).exists():
            msg = f"input {path!r} does not exist"
            raise FileNotFoundError(msg)
    if layer is not None and not any(path.lower().endswith(".h5ad") for path in paths):
        what = (
            f"{paths[0]!r} is a 10X input" if len(paths) == 1 else "none of the inputs is an .h5ad"
        )
        msg = (
            f"--layer {layer!r} applies to .h5ad inputs only; {what} (10X files hold their "
            "counts in X: leave out --layer)"
        )
        raise ValueError(msg)


def _load(path: str, *, genome: str | None, quiet: bool) -> Any:
    """Read a 10X ``.h5``, an mtx folder, a Cell Ranger ``outs/`` folder or an ``.h5ad``."""
    p = Path(path)  # its existence was checked first, by _check_inputs
    with _Step(f"reading {path}", quiet=quiet):
        if p.suffix == ".h5ad":
            import anndata

            return anndata.read_h5ad(p)
        return _read_10x(p, genome=genome)


def _drop_empty_cells(adata: Any, warned: list[str], *, layer: str | None = None) -> Any:
    """Drop cells without counts (they have no dropout rate), noting it in ``warned``.

    CITE-seq cells can be empty once the antibody counts are dropped (only gene expression is
    read).
    """
    from ._utils import get_matrix

    try:
        X = get_matrix(adata, layer if layer is not None and layer in adata.layers else None)
    except ValueError as err:  # X is None: say it with the flag
        msg = str(err).replace("pass `layer=`", "pass --layer")
        raise ValueError(msg) from None
    lib = np.asarray(X.sum(axis=1)).ravel()
    empty = lib <= 0
    if empty.any():
        warned.append(
            f"{int(empty.sum()):,} cells without any count were removed (first "
            f"{adata.obs_names[empty][0]!r})"
        )
        adata = adata[~empty].copy()
    return adata


def _print_warnings(warned: list[str], *, quiet: bool) -> None:
    if not quiet:
        for text in warned:
            print(f"{PROG}: warning: {text}", file=sys.stderr)


def _check_out(out: str, *, overwrite: bool) -> Path:
    p = Path(out)
    if p.suffix != ".h5ad":
        msg = f"--out {out!r} must end in .h5ad"
        raise ValueError(msg)
    _check_output_file(p, flag="--out", kind="an .h5ad file", overwrite=overwrite)
    return p


def _check_table(table: Path, out: Path, *, overwrite: bool) -> None:
    """Refuse a --table that is --out, a folder, in a missing folder, or exists (no --overwrite)."""
    if table.resolve() == out.resolve():
        msg = f"--table {str(table)!r} is the same file as --out; choose another --table"
        raise ValueError(msg)
    _check_output_file(table, flag="--table", kind="a CSV file", overwrite=overwrite)


def _check_output_file(path: Path, *, flag: str, kind: str, overwrite: bool) -> None:
    """Refuse an output file path that is a folder, exists (no --overwrite) or has no folder."""
    if path.is_dir():
        msg = f"{flag} {str(path)!r} is a folder; give the path of {kind}"
        raise ValueError(msg)
    if path.exists() and not overwrite:
        msg = f"{flag} {str(path)!r} exists; pass --overwrite to replace it"
        raise FileExistsError(msg)
    if not path.parent.is_dir():
        msg = f"the folder of {flag} {str(path)!r} does not exist"
        raise FileNotFoundError(msg)


def _write_h5ad(
    adata: Any, path: Path, *, table: Any = None, table_path: Path | None = None
) -> None:
    """Write to temporary names in the same folder, then rename: no partial file on failure.

    With ``table``, the CSV ``table_path`` is written too, and neither file is moved into place
    unless both were written.
    """
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp_table = None
    if table_path is not None:
        tmp_table = table_path.with_name(f".{table_path.name}.partial-{os.getpid()}")
    try:
        if tmp_table is not None:
            table.to_csv(tmp_table, index_label="gene")
        adata.write_h5ad(tmp)
        tmp.replace(path)
        if tmp_table is not None:
            tmp_table.replace(table_path)
    finally:
        for t in (tmp, tmp_table):
            if t is not None and t.exists():
                t.unlink()


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


def _load_counted(args: argparse.Namespace) -> Any:
    """``info``/``genes``: read ``args.path`` and drop (with a warning) cells without counts."""
    adata = _load(args.path, genome=args.genome, quiet=args.quiet)
    warned: list[str] = []
    adata = _drop_empty_cells(adata, warned, layer=args.layer)
    _print_warnings(warned, quiet=args.quiet)
    return adata


def _cmd_info(args: argparse.Namespace) -> int:
    _check_inputs([args.path], layer=args.layer)
    adata = _load_counted(args)
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
    _check_table(table, out, overwrite=args.overwrite)
    _check_inputs([args.path], layer=args.layer)
    adata = _load_counted(args)
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
        _write_h5ad(adata, out, table=df, table_path=table)
    n_sel = int(adata.var[f"{key}_selected"].sum())
    print(f"{n_sel:,} of {adata.n_vars:,} genes selected ({args.flavor}); wrote {out} and {table}")
    return 0


# ---------------------------------------------------------------------------------------------
# scdropout cluster
# ---------------------------------------------------------------------------------------------

METHODS = tuple(_keys.COMPARE_METHODS)
RULES = tuple(_keys.COMPARE_RULES)
COMPARE_KEY = _keys.COMPARE
# files a previous `scdropout cluster` leaves in its folder; --overwrite replaces only such folders
_OUTPUT_FILES = ("result.h5ad", "clusters.csv", "comparison.csv", "report.html")
# what Cell Ranger names its matrices inside outs/ (v3+ and v2; folders and .h5 files)
_CELLRANGER_NAMES = (
    "filtered_feature_bc_matrix",
    "filtered_feature_bc_matrix.h5",
    "raw_feature_bc_matrix",
    "raw_feature_bc_matrix.h5",
    "filtered_gene_bc_matrices",
    "filtered_gene_bc_matrices_h5.h5",
    "raw_gene_bc_matrices",
    "raw_gene_bc_matrices_h5.h5",
)
# warnings that are library noise, not something the user of the report can act on
_NOISE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def _parse_methods(text: str) -> tuple[str, ...]:
    """``--methods``: a comma list of known methods (argparse turns the error into exit 2)."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        msg = f"unknown method(s) {', '.join(map(repr, bad)) or repr(text)}; valid: {', '.join(METHODS)}"
        raise argparse.ArgumentTypeError(msg)
    return tuple(dict.fromkeys(names))


def _parse_rules(text: str) -> tuple[str, ...]:
    """``--rules``: a comma list of clustering rules (argparse turns the error into exit 2)."""
    names = [r.strip().lower() for r in text.split(",") if r.strip()]
    bad = [r for r in names if r not in RULES]
    if bad or not names:
        msg = (
            f"unknown rule(s) {', '.join(map(repr, bad)) or repr(text)}; valid: {', '.join(RULES)}"
        )
        raise argparse.ArgumentTypeError(msg)
    return tuple(dict.fromkeys(names))


def _int_at_least(minimum: int, what: str) -> Any:
    """Make an argparse type for integers >= ``minimum`` (argparse names the flag, exit 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            msg = f"expected {what}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_n_clusters = _int_at_least(2, "an integer of at least 2")
_seed = _int_at_least(0, "a non-negative integer")


def _n_jobs(text: str) -> int:
    """``--n-jobs``: a positive number of threads, or -1 for all cores."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1 and value != -1:
        msg = f"expected a positive integer or -1 (all cores), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _fdr(text: str) -> float:
    """``--fdr``: a q-value threshold in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        msg = f"expected a number in (0, 1], got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _device(text: str) -> str:
    """``--device``: auto, cpu, cuda[:N] or mps (whether CUDA is there is checked before reading)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", text):
        msg = f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return text


def _check_device(device: str) -> None:
    """Refuse ``--device cuda[:N]`` on a machine without that CUDA device (imports torch)."""
    if not device.startswith("cuda"):
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= n:
        have = f"only {n} CUDA device(s) are available" if n else "CUDA is not available here"
        msg = f"--device {device!r} asks for a CUDA device, but {have}; use --device auto or cpu"
        raise ValueError(msg)


def _check_labels(spec: str | None) -> None:
    """Refuse a missing --labels file (a path or a .csv); a column name is checked later."""
    if spec is None:
        return
    # only a name with a table's suffix is surely a file: an obs column may be called
    # "CD4/CD8" or "data"; those are resolved (and refused if unknown) after reading
    p = Path(spec)
    if p.suffix.lower() not in (".csv", ".tsv", ".txt"):
        return
    if p.is_dir():
        msg = f"--labels {spec!r} is a folder; give a CSV of barcode,label or an obs column"
        raise ValueError(msg)
    if not p.exists():
        msg = f"--labels {spec!r} does not exist; give a CSV of barcode,label or an obs column"
        raise FileNotFoundError(msg)


def _check_out_dir(out: Path, *, overwrite: bool, shown: str | None = None) -> None:
    """Refuse an existing ``--out`` without ``--overwrite``, and never replace a foreign folder.

    ``shown`` is ``--out`` as the user wrote it, for the messages (``out`` may be resolved).
    """
    shown = str(out) if shown is None else shown
    if out.exists() or out.is_symlink():
        if not overwrite:
            msg = f"--out {shown!r} exists; pass --overwrite to replace it"
            raise FileExistsError(msg)
        if not out.is_dir():
            msg = f"--out {shown!r} exists and is not a folder; remove it or choose another --out"
            raise FileExistsError(msg)
        if any(out.iterdir()) and not any((out / name).exists() for name in _OUTPUT_FILES):
            msg = (
                f"--out {shown!r} is a folder that holds no `scdropout cluster` result "
                f"({', '.join(_OUTPUT_FILES)}); --overwrite replaces only such folders, so "
                "remove it yourself or choose another --out"
            )
            raise FileExistsError(msg)
    if not out.parent.is_dir():
        msg = f"the folder of --out {shown!r} does not exist"
        raise FileNotFoundError(msg)


def _sample_names(paths: Sequence[str]) -> list[str]:
    """Name each input: its file stem, or the sample folder of a Cell Ranger output.

    Cell Ranger's own names (``outs``, ``filtered_feature_bc_matrix[.h5]``, ...) say nothing
    about the sample, so ``a/outs/filtered_feature_bc_matrix.h5`` is named "a", as ``a/outs``.
    """
    generic = {"outs", "", *_CELLRANGER_NAMES}
    names: list[str] = []
    for path in paths:
        p = Path(path).resolve()
        if p.is_file() and p.name not in generic:
            name = p.name.removesuffix(".h5ad").removesuffix(".h5")
        else:
            while p.name in generic and p.parent != p:
                p = p.parent
            name = p.name or "sample"
        base, i = name, 2
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.append(name)
    return names


def _read_sample(path: str, *, layer: str | None, genome: str | None) -> Any:
    """Read one input and return it with raw counts (CSR float32) in X; errors name the file."""
    import anndata
    from scipy import sparse

    from ._utils import check_counts

    p = Path(path)  # its existence was checked first, by _check_inputs
    try:
        adata = _read_10x(p, genome=genome)
    except (OSError, ValueError, KeyError, TypeError) as err:
        text = str(err).strip("'\"")
        if path in text or str(p.resolve()) in text:
            raise
        msg = f"cannot read input {path!r}: {text}"
        raise ValueError(msg) from err
    is_h5ad = p.is_file() and p.suffix.lower() == ".h5ad"
    X = adata.X
    if is_h5ad and layer is not None:
        if layer not in adata.layers:
            msg = (
                f"--layer {layer!r} is not a layer of {path!r}; its layers: "
                f"{sorted(adata.layers)[:5] or 'none'}"
            )
            raise KeyError(msg)
        X = adata.layers[layer]
    if X is None or not (isinstance(X, np.ndarray) or sparse.issparse(X)):
        msg = f"input {path!r} holds no in-memory count matrix (X is {type(X).__name__})"
        raise TypeError(msg)
    what = f"layer {layer!r}" if is_h5ad and layer is not None else "X"
    check_counts(
        X,
        name=f"{what} of {path!r}",
        obs_names=adata.obs_names,
        var_names=adata.var_names,
        what="raw counts (scdropout cluster needs UMI counts; use --layer for an .h5ad)",
    )
    X = sparse.csr_matrix(X, dtype=np.float32)
    obs = adata.obs.copy() if is_h5ad else adata.obs[[]].copy()
    return anndata.AnnData(X=X, obs=obs, var=adata.var.copy())


def _combine(parts: list[Any], names: list[str], paths: Sequence[str]) -> Any:
    """Stack samples (same genes, reordered if needed) with ``obs['sample']``; one sample as is."""
    import anndata
    import pandas as pd
    from scipy import sparse

    first = parts[0]
    for i in range(1, len(parts)):
        a = parts[i]
        if not a.var_names.equals(first.var_names):
            missing = first.var_names.difference(a.var_names)
            extra = a.var_names.difference(first.var_names)
            if len(missing) or len(extra) or a.n_vars != first.n_vars:
                msg = (
                    f"input {paths[i]!r} has other genes than {paths[0]!r}: {len(missing):,} of "
                    f"the first input's {first.n_vars:,} genes are missing (first "
                    f"{list(missing[:3])}) and {len(extra):,} are extra (first {list(extra[:3])}); "
                    "samples must be quantified against the same reference"
                )
                raise ValueError(msg)
            parts[i] = a[:, first.var_names].copy()
    if len(parts) == 1:
        out = first
        if _keys.SAMPLE not in out.obs.columns:
            out.obs[_keys.SAMPLE] = pd.Categorical([names[0]] * out.n_obs)
        return out
    common = [c for c in first.obs.columns if all(c in a.obs.columns for a in parts[1:])]
    obs = pd.concat([a.obs[common] for a in parts])
    for col in common:
        if not pd.api.types.is_numeric_dtype(obs[col]) or pd.api.types.is_bool_dtype(obs[col]):
            obs[col] = pd.Categorical(obs[col].astype(str))
    obs.index = pd.Index(
        np.concatenate(
            [a.obs_names.to_numpy(object) + f"-{n}" for n, a in zip(names, parts, strict=True)]
        )
    )
    if not obs.index.is_unique:
        dup = obs.index[obs.index.duplicated()][0]
        msg = f"barcode {dup!r} occurs twice after adding the sample names; rename the inputs"
        raise ValueError(msg)
    obs[_keys.SAMPLE] = pd.Categorical(
        np.repeat(names, [a.n_obs for a in parts]), categories=names
    )
    X = sparse.vstack([a.X for a in parts], format="csr", dtype=np.float32)
    return anndata.AnnData(X=X, obs=obs, var=first.var.copy())


def _qc(adata: Any, warned: list[str]) -> Any:
    """Drop cells without counts (they have no dropout rate), with a warning."""
    adata = _drop_empty_cells(adata, warned)
    if adata.n_obs < 3:
        msg = f"only {adata.n_obs} cells with counts; clustering needs at least 3"
        raise ValueError(msg)
    return adata


def _attach_labels(adata: Any, spec: str | None) -> str | None:
    """Resolve ``--labels``: a CSV of barcode,label (stored as obs['label']) or an obs column."""
    import pandas as pd

    if spec is None:
        return None
    p = Path(spec)
    if p.is_file():
        try:
            df = pd.read_csv(p, header=None, dtype=str, keep_default_na=False)
        except (ValueError, OSError) as err:
            msg = f"cannot read --labels {spec!r}: {err}"
            raise ValueError(msg) from err
        if df.shape[1] < 2:
            msg = (
                f"--labels {spec!r} must have two columns, barcode and label; it has {df.shape[1]}"
            )
            raise ValueError(msg)
        if len(df) and df.iloc[0, 0] not in adata.obs_names:
            df = df.iloc[1:]  # a header row
        labels = pd.Series(df.iloc[:, 1].to_numpy(), index=df.iloc[:, 0].to_numpy())
        labels = labels[~labels.index.duplicated()]
        matched = adata.obs_names.isin(labels.index)
        if not matched.all():
            unmatched = adata.obs_names[~matched]
            msg = (
                f"--labels {spec!r}: {int(matched.sum()):,} of the {adata.n_obs:,} cells have a "
                f"label ({int(labels.index.isin(adata.obs_names).sum()):,} of its {len(labels):,} "
                f"barcodes match); first cell without one: {unmatched[0]!r}, first barcode in "
                f"the file: {labels.index[0] if len(labels) else 'none'!r}"
            )
            raise ValueError(msg)
        values = labels.reindex(adata.obs_names)
        blank = (values.str.strip() == "").to_numpy()
        if blank.any():
            msg = (
                f"--labels {spec!r} has no label for {int(blank.sum()):,} cells (an empty "
                f"field; first {adata.obs_names[blank][0]!r}); give every cell a label"
            )
            raise ValueError(msg)
        col = "label" if "label" not in adata.obs.columns else "labels_csv"
        adata.obs[col] = pd.Categorical(values.to_numpy())
        return col
    if spec in adata.obs.columns:
        column = adata.obs[spec]
        missing = column.isna().to_numpy() | (column.astype(str).str.strip() == "").to_numpy()
        if missing.any():
            msg = f"--labels column {spec!r} has no value for {int(missing.sum()):,} cells"
            raise ValueError(msg)
        return spec
    from ._utils import missing_key_message

    msg = missing_key_message("--labels", spec, adata.obs.columns, "obs")
    msg += " It is neither an existing CSV file (barcode,label) nor a column of the data."
    raise KeyError(msg)


def _save_figure(fig: Any, path: Path) -> bytes:
    from .report import figure_png

    fig = getattr(fig, "figure", fig) if not hasattr(fig, "savefig") else fig
    png = figure_png(fig)
    path.write_bytes(png)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png


def _figures(
    adata: Any, folder: Path, *, labels_key: str | None, compared: bool, table: Any = None
) -> dict:
    """Draw every figure of the report into ``folder`` and return their PNG bytes by name.

    ``table`` is the comparison table; with labels, the score figures are left out when it
    holds no score (every method skipped).
    """
    import matplotlib as mpl

    mpl.use("Agg")
    from . import pl

    figs: dict[str, bytes | None] = {
        "qc": _save_figure(pl.dropout_qc(adata), folder / "qc.png"),
        "dropout_curve": _save_figure(
            pl.dropout_curve(adata, title="Dropout rate vs mean"), folder / "dropout_curve.png"
        ),
    }
    if compared:
        figs["embeddings"] = _save_figure(
            pl.compare_embeddings(adata, key=COMPARE_KEY, color=None, rule="ward"),
            folder / "embeddings.png",
        )
    if compared and labels_key is not None:
        figs["embeddings_labels"] = _save_figure(
            pl.compare_embeddings(adata, key=COMPARE_KEY, color=labels_key, rule="ward"),
            folder / "embeddings_labels.png",
        )
        scored = table is None or bool(table.filter(like="ari_").notna().to_numpy().any())
        for metric in ("ari", "nmi") if scored else ():  # none when every method was skipped
            figs[f"scores_{metric}"] = _save_figure(
                pl.compare_scores(adata, key=COMPARE_KEY, metric=metric),
                folder / f"scores_{metric}.png",
            )
    # CIDR's scree, when the comparison keeps tl.cidr's record under "<key>_cidr"
    key = f"{COMPARE_KEY}_cidr"
    if isinstance(adata.uns.get(key), dict) and "eigenvalues" in adata.uns[key]:
        figs["cidr_eigenvalues"] = _save_figure(
            pl.cidr_eigenvalues(adata, key=key), folder / "cidr_eigenvalues.png"
        )
    # the autoencoder's training curves, when the comparison keeps tl.autoencoder's record
    key = f"{COMPARE_KEY}_dae"
    if isinstance(adata.uns.get(key), dict) and "history" in adata.uns[key]:
        figs["autoencoder_history"] = _save_figure(
            pl.autoencoder_history(adata, key=key), folder / "autoencoder_history.png"
        )
    return figs


def _clusters_table(adata: Any, labels_key: str | None) -> Any:
    """barcode, sample, then one column per method and rule (and the labels, when given)."""
    import pandas as pd

    prefix = f"{COMPARE_KEY}_"
    df = pd.DataFrame(index=pd.Index(adata.obs_names, name="barcode"))
    df["sample"] = adata.obs[_keys.SAMPLE].to_numpy()
    if labels_key is not None:
        df["label"] = adata.obs[labels_key].to_numpy()
    for col in adata.obs.columns:
        if col.startswith(prefix) and isinstance(adata.obs[col].dtype, pd.CategoricalDtype):
            df[col.removeprefix(prefix)] = adata.obs[col].to_numpy()
    return df


def _top_genes(adata: Any, n: int = 25) -> Any:
    from . import get

    genes = get.dropout_genes(adata, selected_only=True).head(n)
    stats = get.dropout_stats(adata)[["mean", "rate", "expected"]]
    stats = stats.rename(columns={"rate": "dropout rate", "expected": "expected rate"})
    table = genes.drop(columns=["selected"], errors="ignore").join(stats)
    table.index.name = "gene"
    return table


def _run_compare(adata: Any, args: argparse.Namespace, labels_key: str | None) -> Any:
    from .tl import compare_clusterings

    method_kwargs: dict[str, dict[str, Any]] = {}
    if "dae" in args.methods:
        method_kwargs["dae"] = {"device": args.device}
        if args.epochs is not None:
            method_kwargs["dae"]["max_epochs"] = args.epochs
    if "cidr" in args.methods:
        method_kwargs["cidr"] = {"device": args.device}
    return compare_clusterings(
        adata,
        methods=args.methods,
        labels_key=labels_key,
        n_clusters=args.n_clusters,
        rules=args.rules,
        genes=f"{_keys.DROPOUT_GENES}_selected" if args.genes == "selected" else None,
        method_kwargs=method_kwargs,
        random_state=args.random_state,
        n_jobs=args.n_jobs,
        progress_bar=not args.quiet,
        key_added=COMPARE_KEY,
    )


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an old result only at the end."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _cluster_pipeline(args: argparse.Namespace, tmp: Path, timings: dict[str, float]) -> str:
    """Run every step, writing into ``tmp``; return the line printed at the end."""
    import warnings

    import pandas as pd

    from . import report

    warned: list[str] = []
    quiet = args.quiet
    names = _sample_names(args.samples)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _Step("load", quiet=quiet, timings=timings):
            parts = [_read_sample(s, layer=args.layer, genome=args.genome) for s in args.samples]
            adata = _combine(parts, names, args.samples)
            del parts
        with _Step("QC summary", quiet=quiet, timings=timings):
            adata = _qc(adata, warned)
            labels_key = _attach_labels(adata, args.labels)
            samples = {
                str(k): int(v) for k, v in adata.obs[_keys.SAMPLE].value_counts(sort=False).items()
            }
            if not quiet:
                nnz = adata.X.count_nonzero()
                print(
                    f"[{PROG}]   {adata.n_obs:,} cells x {adata.n_vars:,} genes from "
                    f"{len(samples)} sample(s); {100 * (1 - nnz / np.prod(adata.shape)):.1f}% zeros",
                    file=sys.stderr,
                )
        with _Step("dropout statistics", quiet=quiet, timings=timings):
            pp.dropout_stats(adata, n_jobs=args.n_jobs)
        n_top = min(args.n_top_genes, adata.n_vars)
        with _Step(
            f"dropout-gene selection ({args.flavor}, top {n_top:,})", quiet=quiet, timings=timings
        ):
            pp.dropout_genes(
                adata, flavor=args.flavor, n_top_genes=n_top, fdr=None, n_jobs=args.n_jobs
            )
        n_selected = int(adata.var[f"{_keys.DROPOUT_GENES}_selected"].sum())
        with _Step(
            f"compare clusterings ({', '.join(args.methods)})", quiet=quiet, timings=timings
        ):
            table = _run_compare(adata, args, labels_key)
        with _Step("figures", quiet=quiet, timings=timings):
            figs = _figures(
                adata, tmp / "figures", labels_key=labels_key, compared=True, table=table
            )
        with _Step("write results", quiet=quiet, timings=timings):
            adata.write_h5ad(tmp / "result.h5ad")
            _clusters_table(adata, labels_key).to_csv(tmp / "clusters.csv")
            table.to_csv(tmp / "comparison.csv", index_label="method")
    seen: set[str] = set()
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, _NOISE) or text in seen:
            continue
        seen.add(text)
        warned.append(text)
    for method, status in table["status"].items():
        if str(status) != "ok" and not any(repr(str(method)) in w for w in warned):
            warned.append(f"method {str(method)!r} {status}")
    _print_warnings(warned, quiet=quiet)
    with _Step("report", quiet=quiet, timings=timings):
        params = {
            "samples": " ".join(args.samples),
            "--out": args.out,
            "--methods": ",".join(args.methods),
            "--rules": ",".join(args.rules),
            "--genes": args.genes,
            "--n-top-genes": f"{args.n_top_genes} (used {n_top}, selected {n_selected})",
            "--flavor": args.flavor,
            "--n-clusters": args.n_clusters if args.n_clusters is not None else "automatic",
            "--labels": args.labels if args.labels is not None else "none",
            "--layer": args.layer if args.layer is not None else "X",
            "--genome": args.genome if args.genome is not None else "default",
            "--device": args.device,
            "--epochs": args.epochs if args.epochs is not None else "default",
            "--random-state": args.random_state,
            "--n-jobs": args.n_jobs if args.n_jobs is not None else settings.n_jobs,
        }
        summary = _summary(adata, _keys.DROPOUT_STATS)
        html_text = report.render_report(
            title=f"scdropout cluster: {', '.join(names)}",
            summary=summary,
            samples=samples,
            figures=figs,
            genes=_top_genes(adata),
            n_selected=n_selected,
            comparison=table,
            has_labels=labels_key is not None,
            warnings=warned,
            params=params,
            timings=timings,
            versions=report.versions(),
            created=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
        )
        (tmp / "report.html").write_text(html_text, encoding="utf-8")
    ok = [str(m) for m, s in table["status"].items() if str(s) == "ok"]
    return (
        f"clustered {adata.n_obs:,} cells ({', '.join(ok) or 'no method ran'}); "
        f"wrote {args.out}{os.sep}report.html, result.h5ad, clusters.csv, comparison.csv"
    )


def _cmd_cluster(args: argparse.Namespace) -> int:
    # everything that can be checked without reading data is checked first
    _check_inputs(args.samples, layer=args.layer)
    _check_labels(args.labels)
    if {"dae", "cidr"} & set(args.methods):  # the only methods that take --device
        _check_device(args.device)
    out = Path(args.out)
    # "." and ".." get a real name (the temporary folder goes beside it); a symlink stays one
    out = out.resolve() if out.name in ("", "..") else out.parent.resolve() / out.name
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:
        msg = (
            f"--out {args.out!r} is the current folder or one above it, which --overwrite would "
            "replace; choose a new folder for the results"
        )
        raise ValueError(msg)
    for sample in args.samples:
        if out == Path(sample).resolve() or out in Path(sample).resolve().parents:
            msg = f"--out {args.out!r} holds the input {sample!r}; choose another --out"
            raise ValueError(msg)
    _check_out_dir(out, overwrite=args.overwrite, shown=args.out)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    timings: dict[str, float] = {}
    try:
        (tmp / "figures").mkdir(parents=True)
        line = _cluster_pipeline(args, tmp, timings)
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(line)
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
    common.add_argument(
        "--layer", default=None, help="layer of an .h5ad holding raw counts (default: X)"
    )
    common.add_argument(
        "--genome", default=None, help="genome of a multi-genome Cell Ranger v2 .h5"
    )
    common.add_argument(
        "--n-jobs", type=_n_jobs, default=None, help="threads for numba kernels (default: all)"
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
        "--n-top-genes", type=_positive_int, default=None, help="select this many top genes"
    )
    p_genes.add_argument(
        "--fdr",
        type=_fdr,
        default=0.05,
        help="q-value threshold in (0, 1] when --n-top-genes is not set (default 0.05)",
    )
    p_genes.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p_genes.set_defaults(func=_cmd_genes)

    p_cluster = sub.add_parser(
        "cluster",
        help="cluster samples with CIDR, the dropout autoencoder, PCA and t-SNE; HTML report",
        description=(
            "Load one or more samples, summarise their quality and dropouts, select "
            "dropout-informative genes, cluster the cells with each method, compare the "
            "clusterings and write DIR/result.h5ad, clusters.csv, comparison.csv, figures/*.png "
            "and a self-contained report.html. DIR appears only when everything succeeded."
        ),
    )
    p_cluster.add_argument(
        "samples",
        nargs="+",
        metavar="SAMPLE",
        help="10X .h5, mtx folder, Cell Ranger outs/ folder or .h5ad; several are concatenated",
    )
    p_cluster.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p_cluster.add_argument(
        "--layer", default=None, help="layer of an .h5ad holding raw counts (default: X)"
    )
    p_cluster.add_argument(
        "--genome", default=None, help="genome of a multi-genome Cell Ranger v2 .h5"
    )
    p_cluster.add_argument(
        "--methods",
        type=_parse_methods,
        default=METHODS,
        help=f"comma list of methods to compare (default: {','.join(METHODS)})",
    )
    p_cluster.add_argument(
        "--rules",
        type=_parse_rules,
        default=RULES,
        help=f"comma list of clustering rules applied to every embedding (default: {','.join(RULES)})",
    )
    p_cluster.add_argument(
        "--genes",
        choices=["selected", "all"],
        default="selected",
        help="cluster on the dropout-selected genes (default) or on all genes",
    )
    p_cluster.add_argument(
        "--n-top-genes",
        type=_positive_int,
        default=2000,
        help="number of dropout genes to select (default 2000, at most the number of genes)",
    )
    p_cluster.add_argument("--flavor", choices=["nbumi", "m3drop"], default="nbumi")
    p_cluster.add_argument(
        "--n-clusters",
        type=_n_clusters,
        default=None,
        help="number of clusters (default: each method's automatic choice, or the number of labels)",
    )
    p_cluster.add_argument(
        "--labels",
        default=None,
        help="known cell labels: an obs column of the input or a CSV of barcode,label",
    )
    p_cluster.add_argument(
        "--device",
        type=_device,
        default="auto",
        help="torch device: auto, cpu, cuda, cuda:1, mps (default auto)",
    )
    p_cluster.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="maximum autoencoder epochs (default: the autoencoder's own)",
    )
    p_cluster.add_argument(
        "--random-state", type=_seed, default=0, help="seed, a non-negative integer (default 0)"
    )
    p_cluster.add_argument(
        "--n-jobs",
        type=_n_jobs,
        default=None,
        help="threads for numba kernels, -1 for all (default: all)",
    )
    p_cluster.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    p_cluster.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    p_cluster.add_argument(
        "--verbose", action="store_true", help="also show the library's log (keys written, ...)"
    )
    p_cluster.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p_cluster.set_defaults(func=_cmd_cluster)
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
