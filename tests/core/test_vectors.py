"""Unit rows and linked components: the shared pieces behind label grouping, criteria merging and scores."""

from __future__ import annotations

import numpy as np

from clipclust.core.vectors import linked_components, unit_rows


def test_rows_have_length_one_and_a_zero_row_stays_zero() -> None:
    out = unit_rows([[3.0, 4.0], [0.0, 0.0]])
    assert out.dtype == np.float64 and np.allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert unit_rows(np.ones((2, 3), dtype=np.float16), np.float32).dtype == np.float32


def test_links_join_chains_and_leave_the_rest_alone() -> None:
    labels = linked_components(6, [(0, 2), (2, 4), (5, 5)])
    assert labels[0] == labels[2] == labels[4]
    assert len({labels[0], labels[1], labels[3], labels[5]}) == 4
    assert list(linked_components(3, [])) == [0, 1, 2]
