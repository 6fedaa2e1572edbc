"""Row vectors and the groups they link: the two small pieces of maths several methods share.

:func:`unit_rows` scales each row to length 1 (cosine similarity is then a dot product); a zero row
stays zero instead of turning into NaN. :func:`linked_components` joins items along pairwise links
(equal keys, similar meanings) into groups, the transitive closure a union-find would build.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["linked_components", "unit_rows"]


def unit_rows(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """``x`` as a 2-D array of ``dtype`` with every row of length 1 (zero rows stay zero); a new array."""
    a = np.asarray(x, dtype=dtype)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def linked_components(n: int, links: Iterable[tuple[int, int]]) -> np.ndarray:
    """A component label per item ``0..n-1``: two items share one when a chain of ``links`` joins them."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(list(links), dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]
