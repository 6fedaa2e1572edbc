"""k-means, spectral, agglomerative and HDBSCAN on any stored item set (k-means optionally + the ESMC head).

method: the four registry entries and their options; the algorithms are :mod:`clipclust.core.clustering`.
"""
