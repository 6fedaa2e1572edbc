"""Criteria discovery: which ways of grouping a collection of descriptions does the data support?

Built for small local LLMs, whose one long answer cannot be trusted: a bounded, seeded sample goes to
the LLM in small batches, each asked for a few criteria (:mod:`.prompts`); the proposals are merged and
ranked by how many batches made them (:mod:`.proposing`); the best candidates are then checked by
IC|TC's step-2a labels on a small sample, which drop the criteria that collapse to one value, make every
item different or repeat a better one's partition, and give each kept criterion its values and a
group estimate (:mod:`.scoring`). :mod:`.run` puts the steps together.
"""

from __future__ import annotations

from clipclust.methods.discover.prompts import COMMON_CRITERIA, EXAMPLE_ANSWER, criterion_key, parse_criteria, propose_request
from clipclust.methods.discover.proposing import Candidate, batches, merge_candidates, propose, sample_order, with_common
from clipclust.methods.discover.scoring import (DUPLICATE_AMI, MASS_SHARE, LabelStats, all_different, duplicate_of,
                                                groups_for_mass, label_stats, partition_ami, shared_values, verdict)
from clipclust.methods.discover.run import Criterion, DiscoverResult, degenerate_warnings, run_discover

__all__ = ["COMMON_CRITERIA", "DUPLICATE_AMI", "EXAMPLE_ANSWER", "MASS_SHARE", "Candidate", "Criterion", "DiscoverResult", "LabelStats",
           "all_different", "batches", "criterion_key", "degenerate_warnings", "duplicate_of", "groups_for_mass",
           "label_stats", "merge_candidates", "parse_criteria", "partition_ami", "propose", "propose_request",
           "run_discover", "shared_values", "sample_order", "verdict", "with_common"]
