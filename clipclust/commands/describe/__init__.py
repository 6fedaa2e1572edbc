"""`describe`: VLM descriptions per criterion, group (collage) descriptions and imported description files.

``describing.describe_items`` runs a describer (``per_item``: one text per item; ``groups``: one per
collage); ``importing`` stores descriptions made elsewhere; ``descriptions`` says what a description set is.
"""

from clipclust.commands.describe.describing import describe_items
from clipclust.commands.describe.descriptions import DescribeSummary
from clipclust.commands.describe.importing import ImportSummary, import_into_workspace, text_item_sha256

__all__ = [
    "DescribeSummary",
    "ImportSummary",
    "describe_items",
    "import_into_workspace",
    "text_item_sha256",
]
