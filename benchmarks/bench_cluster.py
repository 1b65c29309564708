"""The whole ``scdropout cluster`` run on a simulated 10,000-cell 10X sample, step by step.

Run from the repository root::

    python benchmarks/bench_cluster.py                  # 10,000 cells x 20,000 genes
    python benchmarks/bench_cluster.py --n-cells 2000 --n-genes 5000 --no-write

The sample is simulated once with ``sd.datasets.synthetic`` (planted groups, so ARI is
meaningful) and written with ``sd.io.write_10x_h5`` under ``benchmarks/_out/bench_cluster/``
(gitignored), then reused. The command runs in a subprocess exactly as a user would type it
(``python -m scdropout cluster SAMPLE --out DIR --labels labels.csv``), so imports and numba
compilation are included; the time of each step is read from its progress lines on stderr. The
table goes into ``benchmarks/RESULTS.md`` between the ``bench_cluster`` markers (the rest of the
file is left alone). Target: the whole run under 5 minutes on the 2-core development machine.

Finally the report is rendered with a headless Chromium (``chromium --headless --screenshot``)
into ``benchmarks/_out/bench_cluster/report.png`` to check that every figure shows; skipped with
a message when Chromium is not installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from importlib.metadata import version
from pathlib import Path

import pandas as pd

import scdropout as sd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "_out" / "bench_cluster"
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- bench_cluster:start -->", "<!-- bench_cluster:end -->"
TARGET_S = 300.0
STEP_RE = re.compile(r"^\[scdropout\] (.+): done in ([0-9.]+)s$")


def prepare(n_cells: int, n_genes: int) -> tuple[Path, Path]:
    """Simulate and write the sample and its labels unless a copy with the same parameters exists."""
    params = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_groups": 5,
        "n_markers": 40,
        "library_size": 5000,
        "true_counts": False,
        "random_state": 0,
    }
    folder = OUT / f"sample_{n_cells}x{n_genes}"
    h5, labels, stamp = folder / "sample.h5", folder / "labels.csv", folder / "params.json"
    wanted = json.dumps(params, sort_keys=True)
    if not (stamp.is_file() and stamp.read_text() == wanted):
        print(f"simulating {n_cells:,} x {n_genes:,} and writing {h5} (once) ...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        adata = sd.datasets.synthetic(**params)
        sd.io.write_10x_h5(adata, h5, overwrite=True)
        pd.DataFrame({"barcode": adata.obs_names, "label": adata.obs["group"].astype(str)}).to_csv(
            labels, index=False
        )
        stamp.write_text(wanted)  # last, so an interrupted run is redone
    return h5, labels


def run_cluster(
    h5: Path, labels: Path, out: Path, extra: list[str]
) -> tuple[float, float, list, str]:
    """Run the command in a subprocess; return wall and CPU seconds, (step, s) pairs, stderr."""
    cmd = [sys.executable, "-m", "scdropout", "cluster", str(h5), "--out", str(out)]
    cmd += ["--labels", str(labels), "--overwrite", *extra]
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    t0 = time.perf_counter()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = []
    with subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, bufsize=1
    ) as proc:
        assert proc.stderr is not None
        for line in proc.stderr:  # echo the progress lines as they come
            lines.append(line)
            sys.stderr.write(line)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if proc.returncode != 0:
        msg = f"scdropout cluster exited with {proc.returncode}"
        raise SystemExit(msg)
    steps = []
    for line in lines:
        m = STEP_RE.match(line.strip())
        if m:
            steps.append((m.group(1), float(m.group(2))))
    return wall, cpu, steps, "".join(lines)


def screenshot(report: Path) -> str:
    """Render the report with headless Chromium; return a line saying what happened."""
    exe = next(
        (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
    )
    if exe is None:
        return "screenshot skipped: chromium is not installed (Debian: apt-get install chromium)"
    png = OUT / "report.png"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--screenshot={png}",
        "--window-size=1400,6000",
        report.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    if proc.returncode != 0 or not png.is_file():
        return f"screenshot failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
    return f"screenshot of the report: {png} ({png.stat().st_size:,} bytes)"


def table(
    n_cells: int, n_genes: int, wall: float, cpu: float, steps: list, out: Path, extra: list[str]
) -> str:
    comparison = pd.read_csv(out / "comparison.csv", index_col=0)
    load = os.getloadavg()[0]
    command = " ".join(["python benchmarks/bench_cluster.py", *extra])
    intro = (
        f"`{command}`, {date.today()}: `sd.datasets.synthetic(n_cells={n_cells}, "
        f"n_genes={n_genes}, n_groups=5, n_markers=40, library_size=5000, true_counts=False)` "
        "written with `sd.io.write_10x_h5`, then `python -m scdropout cluster sample.h5 --out DIR "
        "--labels labels.csv` (methods pca, tsne, cidr, dae unless the command says otherwise; "
        "clustered on the top 2,000 dropout-selected genes) in a subprocess: the wall time includes "
        "Python start-up, imports and numba compilation. "
        f"{os.cpu_count()} CPUs, load average {load:.1f} after the run (the machine is shared and "
        f"other jobs were running), {platform.machine()}, Python {platform.python_version()}; "
        f"scdropout {sd.__version__}, torch {version('torch')}, scanpy {version('scanpy')}."
    )
    lines = [
        "## `scdropout cluster` end to end (`bench_cluster.py`)",
        "",
        intro,
        "",
        "| step | seconds |",
        "|---|---|",
    ]
    lines += [f"| {name} | {sec:.1f} |" for name, sec in steps]
    verdict = "within" if wall < TARGET_S else "**over**"
    load_note = (
        " The CPU time shows how much work the run did: on an idle 2-core machine the wall time "
        "would be at most about that, less where threads overlap."
    )
    lines += [
        f"| **whole command (wall)** | **{wall:.1f}** |",
        f"| whole command, CPU time (user + sys, all threads) | {cpu:.1f} |",
        "",
        f"Target < {TARGET_S:.0f} s (wall): {verdict} the target.{load_note}",
        "",
        "Per method (from `comparison.csv`):",
        "",
        "| method | status | seconds | peak memory (MB) | ARI (ward) | NMI (ward) |",
        "|---|---|---|---|---|---|",
    ]
    for method, row in comparison.iterrows():

        def cell(col: str, fmt: str, row=row) -> str:
            v = row.get(col)
            return "–" if v is None or pd.isna(v) else format(v, fmt)

        lines.append(
            f"| {method} | {row['status']} | {cell('seconds', '.1f')} | "
            f"{cell('peak_memory_mb', '.0f')} | {cell('ari_ward', '.3f')} | "
            f"{cell('nmi_ward', '.3f')} |"
        )
    return "\n".join(lines)


def write_section(text: str) -> None:
    """Put ``text`` between the markers in RESULTS.md, creating the section if needed."""
    block = f"{START}\n{text}\n{END}"
    content = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n"
    if START in content and END in content:
        head, rest = content.split(START, 1)
        content = head + block + rest.split(END, 1)[1]
    else:
        content = content.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=10_000)
    parser.add_argument("--n-genes", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=None, help="autoencoder max epochs")
    parser.add_argument("--methods", default=None, help="comma list (default: the command's)")
    parser.add_argument("--rules", default=None, help="comma list (default: the command's)")
    parser.add_argument("--no-write", action="store_true", help="only print the table")
    parser.add_argument("--no-screenshot", action="store_true")
    args = parser.parse_args()
    h5, labels = prepare(args.n_cells, args.n_genes)
    out = OUT / f"result_{args.n_cells}x{args.n_genes}"
    extra = [] if args.epochs is None else ["--epochs", str(args.epochs)]
    extra += [] if args.methods is None else ["--methods", args.methods]
    extra += [] if args.rules is None else ["--rules", args.rules]
    wall, cpu, steps, stderr = run_cluster(h5, labels, out, extra)
    warnings = [line for line in stderr.splitlines() if line.startswith("scdropout: warning")]
    flags = extra + (
        []
        if (args.n_cells, args.n_genes) == (10_000, 20_000)
        else ["--n-cells", str(args.n_cells), "--n-genes", str(args.n_genes)]
    )
    text = table(args.n_cells, args.n_genes, wall, cpu, steps, out, flags)
    if warnings:
        text += "\n\nWarnings of the run:\n\n" + "\n".join(f"- {w}" for w in warnings)
    print(text)
    print(f"report: {out / 'report.html'}")
    if not args.no_screenshot:
        print(screenshot(out / "report.html"))
    if not args.no_write:
        write_section(text)
        print(f"wrote the bench_cluster section of {RESULTS}")


if __name__ == "__main__":
    main()
