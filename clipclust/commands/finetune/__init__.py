"""Unsupervised CLIP fine-tuning (LatteCLIP, FLYP + pseudo-labels): data, training loop, checkpoints."""

from clipclust.commands.finetune.train import METHODS, EpochStats, FinetuneOptions, FinetuneSummary, StepStats, finetune

__all__ = ["METHODS", "EpochStats", "FinetuneOptions", "FinetuneSummary", "StepStats", "finetune"]
