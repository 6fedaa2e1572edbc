"""The ESMC pseudo-label head, the refinement ``refine="head"`` that the kmeans and esmc methods accept.

training: the head itself (pseudo-labels, the MLP, its training); method: the registry entry, its
settings (ratio, epochs, lr, batch_size, device) and how a method calls it.
"""
