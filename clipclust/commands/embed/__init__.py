"""`embed`: CLIP image, text, fused, zero-shot and class-agnostic sets, written batch by batch to the workspace."""
