# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: a 10X sample from file to clusters, inside a Scanpy workflow
#
# **Question:** how do I load a Cell Ranger output, measure its zero-inflation, pick genes whose
# dropout pattern is informative, and carry on with Scanpy on the same object?
#
# We use the example sample shipped in `data/example_10x/` (a simulated 10X run written in
# Cell Ranger v3 layout, with the planted cell groups known, so we can score the clusters).

# %%
import os

import matplotlib.pyplot as plt
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

import scdropout as sd

FAST = os.environ.get("SCDROPOUT_TUTORIAL_FAST") == "1"
sc.settings.verbosity = 0

# %% [markdown]
# ## Load
# `sd.io.read_10x` accepts an `.h5`, an mtx folder (v2 or v3) or a Cell Ranger `outs/` folder.
# It returns cells × genes raw counts (CSR), barcodes as `obs_names`, gene symbols as
# `var_names`, and `var["gene_ids"]`, `var["feature_types"]`.

# %%
# `sd.datasets.example()` reads data/example_10x/outs/filtered_feature_bc_matrix.h5 with
# `sd.io.read_10x_h5` and adds the planted groups as `obs["group"]`; for your own sample:
# `adata = sd.io.read_10x("sample/outs")`
adata = sd.datasets.example()
adata

# %% [markdown]
# ## Zero-inflation
# `sd.pp.dropout_stats` compares each gene's observed zeros with what a depth-adjusted negative
# binomial (NBumi/DANB) and a Poisson would give, and writes the results to `var`, `obs` and
# `uns["dropout"]`.

# %%
sd.pp.dropout_stats(adata)
sd.get.dropout_stats(adata).sort_values("zscore", ascending=False).head()

# %% [markdown]
# ## Dropout-aware genes
# Genes with more zeros than their expression level explains are the ones that differ between
# cell types. Select the top 300 and look at the dropout curve.

# %%
sd.pp.dropout_genes(adata, flavor="nbumi", n_top_genes=300)
ax = sd.pl.dropout_curve(adata)
plt.show()

# %% [markdown]
# ## Carry on with Scanpy
# The counts in `X` are untouched, so the usual Scanpy steps work on the same object, restricted
# to the selected genes with `mask_var`.

# %%
adata.layers["counts"] = adata.X.copy()
sc.pp.normalize_total(adata, target_sum=1e4)
sc.pp.log1p(adata)
sc.pp.pca(adata, n_comps=20, mask_var="dropout_genes_selected", random_state=0)
sc.pp.neighbors(adata, n_neighbors=15, random_state=0)
sc.tl.leiden(adata, resolution=0.3, random_state=0, flavor="igraph", n_iterations=2)
sc.tl.umap(adata, random_state=0)
sc.pl.umap(adata, color=["leiden", "group"], show=False)
plt.show()

# %% [markdown]
# ## How good are the clusters?

# %%
ari = adjusted_rand_score(adata.obs["group"], adata.obs["leiden"])
print(f"cells: {adata.n_obs}, genes selected: {int(adata.var['dropout_genes_selected'].sum())}")
print(f"Leiden clusters: {adata.obs['leiden'].nunique()}, ARI vs planted groups: {ari:.3f}")
