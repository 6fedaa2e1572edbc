"""k-means, spectral, agglomerative and HDBSCAN on any stored item set (k-means optionally + the ESMC head)."""
