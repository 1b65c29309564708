"""The HTML report of ``scdropout cluster``: self-contained, escaped, every section present."""

from __future__ import annotations

import base64
import re

import matplotlib as mpl
import numpy as np
import pandas as pd
import pytest

from scdropout import report

mpl.use("Agg")

SUMMARY = {
    "cells": 120,
    "genes": 200,
    "genes_detected": 198,
    "sparsity": 0.625,
    "library_size": {"min": 100.0, "median": 1500.0, "mean": 1600.0, "max": 4000.0},
    "genes_per_cell": {"median": 75.0, "mean": 74.5},
    "zeros_observed": 15000.0,
    "zeros_expected_nb": 14800.0,
    "zeros_expected_poisson": 12000.0,
    "genes_excess_zeros_q05": 12,
}


@pytest.fixture(scope="module")
def png():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    data = report.figure_png(fig)
    plt.close(fig)
    return data


def _render(png, **kw):
    comparison = pd.DataFrame(
        {
            "status": ["ok", "skipped: 4 cells, t-SNE needs more"],
            "n_clusters_ward": [3.0, np.nan],
            "ari_ward": [0.8123, np.nan],
        },
        index=pd.Index(["pca", "tsne"], name="method"),
    )
    args = {
        "title": "scdropout cluster: s1",
        "summary": SUMMARY,
        "samples": {"s1": 70, "s2": 50},
        "figures": {"qc": png, "dropout_curve": png, "embeddings": png, "scores_ari": png},
        "genes": pd.DataFrame(
            {"rank": [1, 2], "pval": [1e-8, 0.002]}, index=pd.Index(["CD3E", "MS4A1"], name="gene")
        ),
        "n_selected": 2,
        "comparison": comparison,
        "has_labels": True,
        "warnings": ["method 'tsne' skipped: 4 cells, t-SNE needs more"],
        "params": {"--methods": "pca,tsne", "--random-state": 0},
        "timings": {"load": 0.5, "dropout statistics": 1.25},
        "versions": report.versions(),
        "created": "2026-11-30 22:00 UTC",
    }
    args.update(kw)
    return report.render_report(**args)


def test_every_section_and_embedded_figures(png):
    page = _render(png)
    for sid, heading in report.SECTIONS.items():
        assert f'<section id="{sid}">' in page
        assert f"<h2>{heading}</h2>" in page
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # qc, dropout curve, embeddings, ARI bars (labelled embeddings and NMI missing: notes)
    assert len(imgs) == 4
    assert "The same embeddings, coloured by the labels: no figure" in page
    assert base64.b64decode(imgs[0]) == png
    assert "NMI against the labels, per method: no figure" in page
    assert "CIDR" not in page  # optional figures are left out, not announced
    page = _render(png, figures={"cidr_eigenvalues": png, "cidr_thresholds": png})
    assert "CIDR: variation per principal coordinate" in page
    assert page.count("data:image/png;base64,") == 2


def test_no_external_references(png):
    page = _render(png)
    assert not re.search(r"https?://", page)
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)
    assert "<link" not in page
    assert "<script" not in page


def test_text_is_escaped(png):
    page = _render(
        png,
        samples={"<script>alert(1)</script>": 5},
        warnings=["gene 'A&B' <odd>"],
        params={"--labels": 'x"><img src=x>'},
    )
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "gene &#x27;A&amp;B&#x27; &lt;odd&gt;" in page
    assert 'x"><img src=x>' not in page


def test_summary_tables_and_numbers(png):
    page = _render(png)
    assert "s1 (70 cells), s2 (50 cells)" in page
    assert "62.5% of the entries are zero" in page
    assert "median 1,500" in page
    # one column per method; whole-number counts as integers, NaN as a dash, scores 3 decimals
    comparison = page.split('<section id="comparison">')[1].split("</section>")[0]
    assert '<th class="text">pca</th><th class="text">tsne</th>' in comparison
    row = re.search(r'<tr><td class="text">n_clusters_ward</td>(.*?)</tr>', comparison).group(1)
    assert re.findall(r">([^<]*)</td>", row) == ["3", "–"]
    row = re.search(r'<tr><td class="text">ari_ward</td>(.*?)</tr>', comparison).group(1)
    assert re.findall(r">([^<]*)</td>", row) == ["0.812", "–"]
    assert "CD3E" in page
    assert "Total: 1.8 s" in page
    assert "skipped: 4 cells, t-SNE needs more" in page


def test_no_labels_no_bars_and_no_warnings(png):
    page = _render(png, has_labels=False, warnings=[])
    assert "ARI against the labels" not in page
    assert "No labels were given" in page
    assert "No warnings; every method ran." in page


def test_versions_name_the_stack():
    v = report.versions()
    assert set(v) >= {"scdropout", "python", "numpy", "scanpy", "anndata", "torch"}
    assert v["numpy"] == np.__version__
