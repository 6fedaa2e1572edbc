"""`clipclust report`: one self-contained, offline HTML page that shows a person what the clusters are.

``build`` is the use case; ``catalog`` gathers the items, ``layout`` their map, ``clusters`` each
clustering's cards, scores and table, ``thumbnails`` makes and keeps the thumbnails, ``page`` writes the
page from ``assets/`` (its jinja2 template, style and script).
"""

from clipclust.commands.report.build import HOVER_INLINE, THUMBNAIL_MODES, ReportSummary, report
from clipclust.commands.report.layout import LAYOUTS, TSNE_LIMIT

__all__ = ["HOVER_INLINE", "LAYOUTS", "ReportSummary", "THUMBNAIL_MODES", "TSNE_LIMIT", "report"]
