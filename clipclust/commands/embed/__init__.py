"""`embed`: CLIP image, text, fused, zero-shot and class-agnostic sets, written batch by batch to the workspace.

``embedding.embed`` wires the stages: ``sources`` → ``plan`` → ``texts`` → ``derive`` → ``images``.
"""

from clipclust.commands.embed.embedding import embed
from clipclust.commands.embed.options import FUSE_MODES, STORE_DTYPES, EmbedOptions, EmbedSummary, default_workers
from clipclust.commands.embed.sources import UNREADABLE_MEMO

__all__ = ["FUSE_MODES", "STORE_DTYPES", "UNREADABLE_MEMO", "EmbedOptions", "EmbedSummary", "default_workers", "embed"]
