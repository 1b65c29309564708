"""Default AnnData key names, in one place."""

from __future__ import annotations

# bookkeeping of what scdropout wrote
UNS_SCDROPOUT = "scdropout"
WRITTEN = "written"

# pp.dropout_stats
DROPOUT_STATS = "dropout"
# pp.dropout_genes
DROPOUT_GENES = "dropout_genes"
# tl.cidr
CIDR = "cidr"
# tl.autoencoder
DAE = "dae"
# datasets / io
SAMPLE = "sample"
GENE_IDS = "gene_ids"
FEATURE_TYPES = "feature_types"
GENOME = "genome"
