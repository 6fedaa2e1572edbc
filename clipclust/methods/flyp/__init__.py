"""FLYP + pseudo-labels (LatteCLIP's baseline): fine-tune CLIP contrastively on "a photo of a {c}." of each
image's pseudo-label from the current model.  method: its registry entry and objective."""
