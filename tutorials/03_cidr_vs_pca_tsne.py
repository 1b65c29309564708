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
# # CIDR vs PCA vs t-SNE on labelled data
#
# **Question:** on a sample whose cell groups are known, does CIDR-style clustering (Lin, Troup
# & Ho, Genome Biology 2017; `sd.tl.cidr` with its default flavor) recover the groups better
# than the usual baselines, PCA and t-SNE, and than the dropout autoencoder of tutorial 04? And
# what do the numbers in the comparison table mean?
#
# We use the example sample shipped in `data/example_10x/` (simulated, Cell Ranger v3 layout)
# with the planted group of every cell from `data/example_10x/labels.csv`.

# %%
import os

# Fast mode is what CI runs, on 2 cores shared with other jobs: there, one thread per library
# (torch, BLAS, OpenMP, and `sd.settings.n_jobs` below) keeps threads from spinning against
# each other. Outside fast mode every library uses its defaults.
FAST = os.environ.get("SCDROPOUT_TUTORIAL_FAST") == "1"
if FAST:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# %%
import matplotlib.pyplot as plt
import scanpy as sc
from sklearn.metrics import adjusted_rand_score

import scdropout as sd

sc.settings.verbosity = 0
if FAST:
    sd.settings.n_jobs = 1
# fewer autoencoder epochs and t-SNE iterations in fast mode (CI); scikit-learn's default
# is 1,000 t-SNE iterations
METHOD_KWARGS = {"dae": {"max_epochs": 10 if FAST else 40}}
if FAST:
    METHOD_KWARGS["tsne"] = {"max_iter": 500}

# %% [markdown]
# ## Load the sample and pick genes
# `sd.datasets.example()` reads the Cell Ranger `.h5` and adds `obs["group"]` from
# `labels.csv` (for your own sample: `sd.io.read_10x("sample/outs")`). In fast mode we keep
# 400 of the 1,500 cells. Every method below works on the same 300 dropout-selected genes
# (NBumi, tutorial 02).

# %%
adata = sd.datasets.example()
if FAST:
    sc.pp.subsample(adata, n_obs=400, random_state=0)
sd.pp.dropout_genes(adata, flavor="nbumi", n_top_genes=300)
k_true = adata.obs["group"].nunique()
print(
    f"{adata.n_obs} cells, {int(adata.var['dropout_genes_selected'].sum())} genes, {k_true} groups"
)

# %% [markdown]
# ## CIDR on its own, and its diagnostics
# CIDR treats low values as possible dropouts. For every cell it puts a threshold at the first
# minimum of the density of its log expression: values below it are *dropout candidates*.
# The left panel shows the thresholds of all cells, the right one a few cells' distributions
# with their threshold.

# %%
sd.tl.cidr(adata, genes="dropout_genes_selected", random_state=0, progress_bar=False)
fig = sd.pl.cidr_thresholds(adata)
plt.show()

# %% [markdown]
# In CIDR's dissimilarity between two cells, a candidate counts as equal to the other cell's
# value unless that value is above the weighting threshold W, fitted from the dropout curve,
# and the principal coordinates of that dissimilarity are the embedding. The default flavor
# used here (`flavor="dropout"`) keeps the thresholds and W as diagnostics but leaves that
# implicit imputation off (`impute=False`, which clustered better on large UMI data, see the
# `tl.cidr` docstring): its coordinates are then the principal components of the selected
# genes' log2(TPM + 1) values. The scree below shows how much variation each coordinate
# carries; the first 20 (the line) are clustered with Leiden, which sets the number of
# clusters without seeing the labels. `impute=True` turns CIDR's imputation on, and
# `flavor="r"` runs the published method (its own number of coordinates, and k by the
# Calinski-Harabasz index).

# %%
ax = sd.pl.cidr_eigenvalues(adata)
plt.show()
info = adata.uns["cidr"]
ari_cidr_auto = adjusted_rand_score(adata.obs["group"], adata.obs["cidr"])
print(
    f"W = {info['w_threshold']:.2f}; {info['n_pcs']} coordinates; automatic k = "
    f"{info['n_clusters']} (true {k_true}); ARI vs planted groups {ari_cidr_auto:.3f}"
)

# %% [markdown]
# ## The comparison
# `sd.tl.compare_clusterings` embeds the same counts (same genes) four ways — PCA (50 PCs of
# log-normalised, scaled values), t-SNE (2-D, from those PCs), CIDR's principal coordinates
# and the autoencoder's latent space — and clusters every embedding with the same rules:
# Ward's method cut at k clusters and Leiden on a 15-nearest-neighbour graph. With
# `labels_key`, k for Ward is the number of labels and every clustering is scored against them.
# `method_kwargs` passes options to a method: here the autoencoder's number of epochs (and
# fewer t-SNE iterations in fast mode).

# %%
table = sd.tl.compare_clusterings(
    adata,
    methods=("pca", "tsne", "cidr", "dae"),
    labels_key="group",
    genes="dropout_genes_selected",
    rules=("ward", "leiden"),
    method_kwargs=METHOD_KWARGS,
    random_state=0,
    progress_bar=False,
)
table

# %% [markdown]
# Each panel is one method's embedding (the first two columns), coloured by the planted group:
# well-separated colours mean the embedding keeps the groups apart.

# %%
fig = sd.pl.compare_embeddings(adata, color="group")
plt.show()

# %% [markdown]
# And the scores, one bar per clustering rule.

# %%
fig = sd.pl.compare_scores(adata, metric="ari")
plt.show()

# %% [markdown]
# ## Reading the table
# - **`ari_<rule>`**, adjusted Rand index: agreement of the clusters with the planted groups,
#   corrected for chance (1 = identical partitions, about 0 = random, can be negative).
#   **`nmi_<rule>`**, normalised mutual information, says the same on a 0–1 scale and is
#   kinder to partitions that split a group in two.
# - **`n_clusters_<rule>`**: Ward is cut at the true k (5) because we passed `labels_key`, so
#   its scores measure the embedding alone. Leiden chooses its own number of clusters from the
#   graph (resolution 1): a Leiden k far from 5 costs ARI even on a good embedding. Without
#   labels (and without `n_clusters`), `compare_clusterings` picks Ward's k on every embedding
#   by the Calinski-Harabasz index, the rule of R's CIDR.
# - **`silhouette_<rule>`**: how compact and separated the clusters are *in the method's own
#   space*. It needs no labels, but it is not comparable across methods: a 2-D t-SNE map
#   has tight, well-separated islands by construction.
# - **`mean_agreement`**: mean ARI between this method's clusters and every other method's;
#   the score to look at when there are no labels.
# - **`seconds`**, **`peak_memory_mb`**: wall time and memory of the embedding plus its
#   clusterings (on a shared, loaded machine these vary from run to run).

# %%
cols = [
    "n_clusters_ward",
    "ari_ward",
    "nmi_ward",
    "n_clusters_leiden",
    "ari_leiden",
    "silhouette_ward",
    "seconds",
]
print(f"mode: {'fast' if FAST else 'full'}, {adata.n_obs} cells, true k = {k_true}")
print(f"CIDR alone: automatic k = {info['n_clusters']}, ARI {ari_cidr_auto:.3f}")
print(table[cols].round(3).to_string())
