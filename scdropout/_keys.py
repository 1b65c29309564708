"""Default AnnData key names, in one place."""

from __future__ import annotations

# bookkeeping of what scdropout wrote
UNS_SCDROPOUT = "scdropout"
WRITTEN = "written"

# pp.dropout_stats
DROPOUT_STATS = "dropout"
# columns written by pp.dropout_stats, as suffixes of f"{key_added}_"; this order is also the
# column order of the get.dropout_stats / get.dropout_cells tables
DROPOUT_VAR_COLUMNS = (
    "n_detected",
    "detection_rate",
    "rate",
    "mean",
    "var",
    "mean_nonzero",
    "mean_normalized",
    "expected_poisson",
    "expected",
    "nb_size",
    "excess",
    "zscore",
    "pval",
    "qval",
)
DROPOUT_OBS_COLUMNS = (
    "total_counts",
    "n_detected",
    "zeros",
    "expected_zeros",
    "expected_zeros_poisson",
)
# pp.dropout_genes
DROPOUT_GENES = "dropout_genes"
DROPOUT_GENES_VAR_COLUMNS = ("rank", "effect", "pval", "qval", "selected")
# tl.cidr
CIDR = "cidr"
# tl.autoencoder
DAE = "dae"
# datasets / io
SAMPLE = "sample"
GENE_IDS = "gene_ids"
FEATURE_TYPES = "feature_types"
GENOME = "genome"
# tl.compare_clusterings (obsm f"X_{key}_{method}", obs f"{key}_{method}_{rule}", uns key)
COMPARE = "compare"
COMPARE_METHODS = ("pca", "tsne", "cidr", "dae")
COMPARE_RULES = ("ward", "leiden")
