"""Group descriptions (LatteCLIP): items grouped by a stored zero-shot set or clustering, each collage of up
to N members of one group described once, every member given its group's text.

Grouping is per label, so the groups are the same whether the labels are described in one call or one at
a time; each label's rows (texts and memberships) are written when its groups are described.
"""

from __future__ import annotations

import json

import numpy as np

from clipclust.commands.describe.descriptions import DescribeSummary, description_spec, membership_spec
from clipclust.commands.describe.per_item import loader
from clipclust.core.progress import Reporter
from clipclust.errors import InputError, opt
from clipclust.models.llm import DecodeParams
from clipclust.methods.latteclip.group import describe_groups
from clipclust.methods.latteclip.prompts import latteclip_prompt
from clipclust.models.vlm import CachedDescriber
from clipclust.store import SetSpec, Workspace


def group_labels(workspace: Workspace, keys: list[str], group_by: str, on: str | None) -> tuple[list[str | None], str]:
    """Each item's group label (None = left out) and a short description of where the labels came from;
    an error if no item has one.

    ``zeroshot``: the argmax class of a stored zero-shot set (``on`` names which); ``cluster:NAME``: a
    stored clustering's cluster ids (noise left out).
    """
    if group_by == "zeroshot":
        info = workspace.resolve_set(on or "zeroshot")
        if info.kind != "zeroshot":
            raise InputError(f"{opt('group_by')} zeroshot needs a zeroshot set; '{info.name}' is a {info.kind} set")
        classes = json.loads(info.attrs.get("classes", "[]"))
        stored_keys, sims = workspace.read_set(info.id)
        row_of = {k: i for i, k in enumerate(stored_keys)}
        labels = [classes[int(np.argmax(sims[row_of[k]]))] if k in row_of else None for k in keys]
        source = f"zeroshot:{info.id}"
    elif group_by.startswith("cluster:") and group_by[len("cluster:"):]:
        name = group_by[len("cluster:"):]
        stored = workspace.read_clustering(name)
        id_of = {k: int(c) for k, c in zip(stored["keys"], stored["ids"])}
        labels = [str(id_of[k]) if id_of.get(k, -1) >= 0 else None for k in keys]
        source = f"cluster:{name}"
    else:
        raise InputError(f"{opt('group_by')} {group_by}: expected 'zeroshot' or 'cluster:NAME'")
    if not any(lab is not None for lab in labels):
        raise InputError(f"{opt('group_by')} {group_by}: none of the {len(keys)} items has a group")
    return labels, source


def group_spec(cached: CachedDescriber, vlm: str | None, criterion: str | None, prompt: str | None, label: str,
               params: DecodeParams, source: str, size: int) -> tuple[SetSpec, str]:
    """The group-description set of groups of ``size`` made from ``source``, and its prompt (LatteCLIP's)."""
    text = prompt or latteclip_prompt(criterion.strip(), group=True)  # type: ignore[union-attr]
    spec = description_spec("group-description", f"group-description:{label} [{source} x{size}]", cached.identity,
                            text, {"describer": cached.describer.name, "vlm_spec": str(vlm or ""),
                                   "criterion": criterion or "", "params": params.to_dict(), "group_by": source,
                                   "group_size": size, "membership": "the group-membership set of the same name"},
                            (params.to_dict(), source, size))
    return spec, text


def describe_in_groups(workspace: Workspace, cached: CachedDescriber, spec: SetSpec, keys: list[str],
                       paths: list[str], labels: list[str | None], done: set[str], prompt: str, params: DecodeParams,
                       group_size: int, reporter: Reporter, summary: DescribeSummary) -> None:
    """Collage descriptions of the items of ``keys``, one label at a time; labels whose items ``done`` holds
    all cost nothing."""
    membership = membership_spec(spec)
    by_label: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab is not None:
            by_label.setdefault(lab, []).append(i)
    summary.skipped.extend((paths[i], "no group label") for i, lab in enumerate(labels) if lab is None)
    summary.n_groups = 0
    with reporter.task("describing groups", sum(len(v) for v in by_label.values())) as advance:
        for lab in sorted(by_label):
            members = by_label[lab]
            if all(keys[i] in done for i in members):
                summary.cached += len(members)
                summary.n_groups += -(-len(members) // group_size)
                advance(len(members))
                continue
            groups = describe_groups(cached, [loader(paths[i]) for i in members], [keys[i] for i in members],
                                     [lab] * len(members), prompt, params, group_size=group_size,
                                     seed=params.seed)
            answered = [g for g in groups if g.text.strip()]  # an empty answer is not stored
            summary.count(cached.last_stats.misses, cached.last_stats.hits, len(groups) - len(answered))
            groups = answered
            summary.n_groups += len(groups)
            row_keys: list[str] = []
            texts: list[str] = []
            member_rows: list[str] = []
            for g in groups:
                member_keys = [keys[members[j]] for j in g.members]
                for k in member_keys:
                    row_keys.append(k)
                    texts.append(g.text)
                    member_rows.append(json.dumps({"label": lab, "group": g.input_id, "members": member_keys}))
            workspace.write_batch(rows=[(spec, row_keys, texts), (membership, row_keys, member_rows)])
            advance(len(members))
