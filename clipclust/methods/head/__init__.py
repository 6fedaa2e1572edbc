"""The ESMC pseudo-label head (seed 001), a refinement on top of k-means used by the classic and esmc methods."""
