"""LatteCLIP's description prompts: one image, or a collage of images that share a pseudo-label."""

from __future__ import annotations

ITEM_PROMPT = "Describe the {domain} in the photo concisely, less than 20 words."
"""LatteCLIP's per-image description prompt."""

GROUP_PROMPT = (
    "Describe the common visual attributes of the {domain} in all the photos concisely, "
    "less than 20 words."
)
"""LatteCLIP's group (collage) description prompt."""


def latteclip_prompt(domain: str, group: bool = False) -> str:
    """LatteCLIP's image or group prompt for a domain such as "flower" or "food"."""
    return (GROUP_PROMPT if group else ITEM_PROMPT).replace("{domain}", domain)


__all__ = ["GROUP_PROMPT", "ITEM_PROMPT", "latteclip_prompt"]
