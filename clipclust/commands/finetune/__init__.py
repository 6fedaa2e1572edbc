"""Unsupervised CLIP fine-tuning with any registered method (LatteCLIP, FLYP + pseudo-labels): the items and
their descriptions (batches), the run's settings (settings), one step (trainer) and the run (train)."""

from clipclust.commands.finetune.settings import FinetuneOptions
from clipclust.commands.finetune.train import EpochStats, FinetuneSummary, StepStats, finetune

__all__ = ["EpochStats", "FinetuneOptions", "FinetuneSummary", "StepStats", "finetune"]
