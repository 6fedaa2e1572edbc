"""The fused-embedding workflow (methods.md section 1): spectral clusters of fused image+prompt vectors, majority-vote
labels, test items classified by the nearest filtered centroid.  workflow: the maths; method: the registry entry."""
