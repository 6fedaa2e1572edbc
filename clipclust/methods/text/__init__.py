"""The text route: a sentence-transformers embedding of each stored description, clustered (k-means).

The no-LLM baseline beside IC|TC and ESMC on the same description set.  embeddings: the stored,
resumable embedding set; method: the registry entry.
"""
