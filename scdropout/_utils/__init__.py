"""Shared helpers: input checks, result writing, random state, warnings, threads, memory."""

from __future__ import annotations

from ._checks import (
    as_csr_or_dense,
    check_adata,
    check_choice,
    check_counts,
    check_matrix_type,
    check_orientation,
    check_positive_int,
    gene_mask,
    get_matrix,
    missing_key_message,
    var_mask,
)
from ._memory import check_memory
from ._random import as_generator, seed_repr
from ._threads import resolve_n_jobs, thread_limit
from ._warn import warn
from ._write import check_conflicts, write_results, written_by

__all__ = [
    "as_csr_or_dense",
    "as_generator",
    "check_adata",
    "check_choice",
    "check_conflicts",
    "check_counts",
    "check_matrix_type",
    "check_memory",
    "check_orientation",
    "check_positive_int",
    "gene_mask",
    "get_matrix",
    "missing_key_message",
    "resolve_n_jobs",
    "seed_repr",
    "thread_limit",
    "var_mask",
    "warn",
    "write_results",
    "written_by",
]
