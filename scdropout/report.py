"""The self-contained HTML report of ``scdropout cluster``.

One file a biologist can open offline: figures are embedded as base64 PNG, the CSS is inline and
no element refers to anything outside the file. Every piece of text that comes from the data or
the command line (sample names, gene names, warnings, parameters) is HTML-escaped. This module
only formats what it is given; the pipeline that computes the numbers lives in ``cli.py``.
"""

from __future__ import annotations

import base64
import html
import io
import math
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import pandas as pd

from ._version import __version__

__all__ = ["figure_png", "render_report", "versions"]

# section id -> heading, in page order
SECTIONS = {
    "summary": "Data summary",
    "qc": "Quality control",
    "dropout": "Dropout curve and selected genes",
    "embeddings": "Embeddings",
    "comparison": "Comparison of methods",
    "warnings": "Warnings and skipped methods",
    "parameters": "Parameters",
    "timings": "Timings",
    "versions": "Versions",
}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #222; background: #fafafa; }
header { background: #234; color: #fff; padding: 1em 2em; }
header h1 { margin: 0 0 .2em 0; font-size: 1.6em; }
header p { margin: 0; opacity: .85; }
nav { padding: .5em 2em; background: #e8ecf0; font-size: .9em; }
nav a { margin-right: 1em; color: #234; }
main { padding: 0 2em 2em 2em; max-width: 1300px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: .5em 1.5em 1em;
          margin-top: 1.2em; }
h2 { color: #234; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
div.wide { overflow-x: auto; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f2f4; }
td.text, th.text { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
.note { color: #555; font-style: italic; }
ul.warnings li { color: #8a4b00; margin-bottom: .3em; }
.ok { color: #1a7f37; }
.skipped { color: #8a4b00; }
"""


def figure_png(fig: Any, *, dpi: int = 100) -> bytes:
    """Render a matplotlib Figure to PNG bytes."""
    buf = io.BytesIO()
    # no "Software" metadata: the page should hold no URL, not even inside a PNG
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def versions() -> dict[str, str]:
    """Versions of scdropout, Python and the libraries the pipeline uses."""
    out = {"scdropout": __version__, "python": platform.python_version()}
    for pkg in ("numpy", "scipy", "pandas", "scanpy", "anndata", "torch", "numba", "matplotlib"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """Format one table cell: integers with separators, floats with 3-4 significant digits."""
    if isinstance(value, bool):
        return str(value)
    if value is None or value is pd.NA or value is pd.NaT:  # nullable columns' missing values
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)


def _table(df: pd.DataFrame, *, index: bool = True) -> str:
    """Render ``df`` as an HTML table, every cell escaped; text columns left-aligned."""
    heads = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    rows = []
    for idx, rec in zip(df.index, df.itertuples(index=False), strict=True):
        cells = [f'<td class="text">{_e(idx)}</td>'] if index else []
        for v in rec:
            item = v.item() if hasattr(v, "item") else v
            cls = "" if isinstance(item, int | float) and not isinstance(item, bool) else "text"
            cells.append(f'<td class="{cls}">{_e(_fmt(item))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f'<th class="text">{_e(h)}</th>' for h in heads)
    return (
        f'<div class="wide"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _kv_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(
        f'<tr><th class="text">{_e(k)}</th><td class="text">{_e(v)}</td></tr>' for k, v in items
    )
    return f"<table><tbody>{rows}</tbody></table>"


def _img(png: bytes | None, caption: str) -> str:
    if not png:
        return f'<p class="note">{_e(caption)}: no figure (not available for this run).</p>'
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _section(sid: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(SECTIONS[sid])}</h2>\n{body}\n</section>'


def _summary_body(summary: Mapping[str, Any], samples: Mapping[str, int]) -> str:
    lib, gpc = summary["library_size"], summary["genes_per_cell"]
    items = [
        ("samples", ", ".join(f"{name} ({n:,} cells)" for name, n in samples.items())),
        ("cells", f"{summary['cells']:,}"),
        (
            "genes",
            f"{summary['genes']:,} ({summary['genes_detected']:,} detected in at least one cell)",
        ),
        ("sparsity", f"{100 * summary['sparsity']:.1f}% of the entries are zero"),
        (
            "library size (UMIs per cell)",
            f"min {lib['min']:,.0f}, median {lib['median']:,.0f}, mean {lib['mean']:,.0f}, "
            f"max {lib['max']:,.0f}",
        ),
        ("detected genes per cell", f"median {gpc['median']:,.0f}, mean {gpc['mean']:,.1f}"),
        (
            "zeros observed / expected",
            f"{summary['zeros_observed']:,.0f} observed; {summary['zeros_expected_nb']:,.0f} "
            f"expected under the depth-adjusted negative binomial, "
            f"{summary['zeros_expected_poisson']:,.0f} under Poisson",
        ),
        (
            "zero-inflated genes",
            f"{summary['genes_excess_zeros_q05']:,} genes with more zeros than the negative "
            "binomial expects (BH q < 0.05)",
        ),
    ]
    items.extend((str(k), v) for k, v in summary.get("extra", {}).items())
    return _kv_table(items)


def _by_method(comparison: pd.DataFrame) -> pd.DataFrame:
    """Transpose the comparison (one column per method) so that it fits the page."""
    table = comparison.copy()
    for col in table.columns:
        values = table[col]
        if str(col).startswith("n_clusters"):  # counts, float only because of NaN gaps
            ints = [int(v) if pd.notna(v) else v for v in values]
            table[col] = pd.Series(ints, index=table.index, dtype=object)
        else:
            table[col] = values.astype(object)
    out = table.T
    out.index.name = ""
    return out


def _comparison_body(
    comparison: pd.DataFrame | None, figures: Mapping[str, bytes | None], *, has_labels: bool
) -> str:
    if comparison is None or comparison.empty:
        return '<p class="note">No comparison was run.</p>'
    text = (
        "One column per method: the number of clusters found by each clustering rule, "
        "agreement with the given labels (ARI, NMI; 1 = identical partitions), silhouette in "
        "the method's own space, mean agreement (ARI) with the other methods, run time "
        "(seconds) and peak memory (MB)."
    )
    if not has_labels:
        text += " No labels were given, so ARI/NMI against labels are not available."
    parts = [f"<p>{_e(text)}</p>", _table(_by_method(comparison))]
    if has_labels:
        parts.append(_img(figures.get("scores_ari"), "ARI against the labels, per method"))
        parts.append(_img(figures.get("scores_nmi"), "NMI against the labels, per method"))
    return "\n".join(parts)


def render_report(
    *,
    title: str,
    summary: Mapping[str, Any],
    samples: Mapping[str, int],
    figures: Mapping[str, bytes | None],
    genes: pd.DataFrame,
    n_selected: int,
    comparison: pd.DataFrame | None,
    has_labels: bool,
    warnings: Sequence[str],
    params: Mapping[str, Any],
    timings: Mapping[str, float],
    versions: Mapping[str, str],
    created: str,
) -> str:
    """Return the report as one HTML string.

    Parameters
    ----------
    title
        Page title (escaped).
    summary
        The data summary: ``cells``, ``genes``, ``genes_detected``, ``sparsity``,
        ``library_size`` (min/median/mean/max), ``genes_per_cell`` (median/mean),
        ``zeros_observed``, ``zeros_expected_nb``, ``zeros_expected_poisson``,
        ``genes_excess_zeros_q05`` and optionally ``extra`` (more label -> text rows).
    samples
        Sample name -> number of cells.
    figures
        PNG bytes by name: ``qc``, ``dropout_curve``, ``embeddings`` (coloured by cluster),
        and with labels ``embeddings_labels``, ``scores_ari``, ``scores_nmi`` (a missing one
        gets a note); ``cidr_eigenvalues``, ``cidr_thresholds`` and ``autoencoder_history``
        only when given.
    genes
        The top of the gene ranking (rows = genes), shown as a table.
    n_selected
        Number of genes selected.
    comparison
        The comparison table (index = method), or None when no comparison ran.
    has_labels
        Whether labels were given (ARI/NMI bars are then shown).
    warnings
        Warning messages of the run, skipped methods included.
    params
        Parameters of the run, name -> value.
    timings
        Step name -> seconds.
    versions
        Package -> version.
    created
        Timestamp shown in the header.

    Returns
    -------
    The HTML page, self-contained (no external URL).
    """
    sections = [
        _section("summary", _summary_body(summary, samples)),
        _section(
            "qc",
            "<p>Left: zeros per cell, observed against expected under the depth-adjusted "
            "negative binomial (points on the line fit the model). Right: library sizes.</p>"
            + _img(figures.get("qc"), "Zeros per cell and library sizes"),
        ),
        _section(
            "dropout",
            f"<p>Each point is a gene: mean count against the fraction of cells where it is zero. "
            f"Genes above the expected curve have more zeros than their expression explains; "
            f"the {n_selected:,} selected genes are drawn in red. Top of the ranking:</p>"
            + _img(figures.get("dropout_curve"), "Dropout rate against mean expression")
            + _table(genes),
        ),
        _section(
            "embeddings",
            _img(
                figures.get("embeddings"),
                "Embedding of each method, coloured by its Ward clusters",
            )
            + (
                _img(
                    figures.get("embeddings_labels"), "The same embeddings, coloured by the labels"
                )
                if has_labels
                else ""
            )
            + "".join(
                _img(figures[name], caption)
                for name, caption in (
                    ("cidr_eigenvalues", "CIDR: variation per principal coordinate"),
                    ("cidr_thresholds", "CIDR: dropout-candidate thresholds"),
                    (
                        "autoencoder_history",
                        "Autoencoder: loss per epoch on the training and validation cells "
                        "(dashed: the epoch whose weights were kept)",
                    ),
                )
                if figures.get(name)
            ),
        ),
        _section("comparison", _comparison_body(comparison, figures, has_labels=has_labels)),
        _section(
            "warnings",
            '<ul class="warnings">' + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>"
            if warnings
            else '<p class="note">No warnings; every method ran.</p>',
        ),
        _section("parameters", _kv_table([(k, v) for k, v in params.items()])),
        _section(
            "timings",
            _kv_table([(k, f"{v:.2f} s") for k, v in timings.items()])
            + f"<p>Total: {sum(timings.values()):.1f} s</p>",
        ),
        _section("versions", _kv_table(list(versions.items()))),
    ]
    nav = "".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name in SECTIONS.items())
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{_e(title)}</h1><p>scdropout {_e(__version__)} · {_e(created)}</p>"
        f"</header>\n<nav>{nav}</nav>\n<main>\n"
        + "\n".join(sections)
        + "\n</main>\n</body>\n</html>\n"
    )
