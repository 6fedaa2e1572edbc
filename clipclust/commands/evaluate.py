"""Measuring stored clusterings, zero-shot sets and linear probes against labels: `clipclust evaluate`.

Labels are read here, after clustering, and nowhere in the clustering code (the fused workflow's majority
vote aside).  Every report is a dataclass whose ``to_dict()`` is one JSON object; clusterings, zero-shot
sets and prototypes share one shape (:class:`ScoreReport`).  The result keys them by the clustering's
name (``evaluate --json | jq '."kmeans-image".acc'``), by the zero-shot set's name, or by
``probe:KIND:SET`` for a probe.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from clipclust.store import SetInfo, Workspace
from clipclust.commands.levels import mapped_scores, with_levels
from clipclust.commands.selection import choose_clustering
from clipclust.methods.inputs import label_space, resolve_item_set, rows_for_keys
from clipclust.errors import InputError, opt, step
from clipclust.core.metrics import classification_accuracy, clustering_report, linear_probe, silhouette, stratified_holdout
from clipclust.core.progress import Reporter, SilentReporter

__all__ = ["ClassificationReport", "ClusteringReport", "EvaluationResult", "ProbeReport", "ScoreReport", "evaluate",
           "evaluate_clustering", "evaluate_prototypes", "evaluate_zero_shot", "prototype_sets", "probe_set"]

Metric = Literal["euclidean", "cosine"]
LOGIT_KINDS = ("zeroshot", "agnostic")  # cosine logits: the thesis fits its probe on them unscaled
NO_LABELS_HINT = f"evaluate compares with labels: embed the images from class folders or with {opt('labels')} CSV"


@dataclass
class ScoreReport:
    """A clustering or a classification scored against the labels: one row of evaluate's table.

    ``n_items`` ... ``unmatched_classes`` are ``core.metrics.clustering_report``'s (the external ones None
    without labels, which use the ``n_labelled`` items only); ``accuracy`` is the classification accuracy
    where there are predictions (the fused workflow's test items, zero-shot, prototypes).
    """

    kind: str  # "clustering" or "zero-shot"
    name: str
    method: str
    on: str
    n_labelled: int
    n_items: int
    n_clusters: int
    n_noise: int
    cluster_sizes: dict[str, int]
    silhouette: float | None
    n_classes: int | None
    acc: float | None
    nmi: float | None
    ami: float | None
    ari: float | None
    rand_index: float | None
    purity: float | None
    mapping: dict[str, Any] | None
    unmatched_classes: list[Any] | None
    silhouette_metric: str | None
    accuracy: float | None
    n_predicted: int | None
    n_predicted_labelled: int | None
    predicted_on: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ClusteringReport(ScoreReport):
    """A stored clustering; ``cluster_names`` when its method names clusters (IC|TC, the fused workflow).

    A level of a taxonomy says which (``level``, 1 = coarsest; ``levels``, coarse to fine; ``parent``);
    ``mapped`` scores it against the labels mapped to coarser ones (``label_map``).
    """

    cluster_names: list[str] | None = None
    level: int | None = None
    levels: list[str] | None = None
    parent: str | None = None
    mapped: dict[str, Any] | None = None


@dataclass
class ClassificationReport(ScoreReport):
    """Zero-shot classes or fine-tuned prototypes: items whose label is none of the classes are counted out."""

    n_outside_classes: int = 0


@dataclass
class ProbeReport:
    """The linear probe on one set: its split, sizes, accuracy and the entropy of its predictions."""

    kind: str = field(default="probe", init=False)
    name: str
    probe: str
    on: str
    set_kind: str
    split: str
    n_train: int
    n_test: int
    n_classes: int
    accuracy: float
    temperature: float | None
    standardize: bool
    mean_entropy: float
    max_entropy: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvaluationResult:
    """Reports by name (clusterings, zero-shot sets, probes), in the order they were made."""

    reports: dict[str, ScoreReport | ProbeReport] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The reports by name, as ``evaluate --json`` prints them (warnings went to the reporter)."""
        return {name: report.to_dict() for name, report in self.reports.items()}


def _labels(workspace: Workspace) -> dict[str, str]:
    items = workspace.items()
    return {sha: label for sha, label in zip(items.sha256, items.label) if label}


def evaluate_clustering(workspace: Workspace, name: str, *, metric: Metric = "euclidean", seed: int = 0,
                        labels: dict[str, str] | None = None, require_labels: bool = True,
                        label_map: dict[str, str] | None = None, reporter: Reporter | None = None) -> ClusteringReport:
    """Every metric of one stored clustering: ACC (Hungarian), NMI, AMI, ARI, RI, purity, silhouette, sizes,
    unmatched classes; plus classification accuracy when it stored predictions (the fused workflow).

    External metrics use the labelled items only (``n_labelled``); silhouette uses every clustered vector.
    """
    reporter = reporter or SilentReporter()
    stored = workspace.read_clustering(name)
    params = stored["params"]
    labels = _labels(workspace) if labels is None else labels
    keys = list(stored["keys"])
    ids = np.asarray(stored["ids"], dtype=np.int64)
    to_space = label_space(params)
    truth = np.array([to_space(labels.get(k, "")) for k in keys], dtype=object)
    labelled = truth != ""
    if require_labels and not labelled.any():
        raise InputError(f"no item of clustering '{name}' has a label; {NO_LABELS_HINT}")

    input_set = params.get("sets", {}).get("input", {})
    text_input = input_set.get("kind") in ("description", "group-description")  # IC|TC: texts, no vectors
    vectors = rows_for_keys(workspace, input_set["id"], keys) if input_set and not text_input else None
    if vectors is None and not text_input:
        reporter.warn(f"'{name}': the vectors it was made from are no longer stored; silhouette left out")
    scores = clustering_report(None, ids)
    scores["silhouette"] = None if vectors is None else silhouette(vectors, ids, metric=metric, seed=seed)
    if labelled.any():
        external = clustering_report(truth[labelled].astype(str), ids[labelled])
        for key in ("n_classes", "acc", "nmi", "ami", "ari", "rand_index", "purity", "mapping", "unmatched_classes"):
            scores[key] = external[key]
    method = params.get("method", "") + (f"+{params['refine']}" if params.get("refine") else "")
    report = ClusteringReport(kind="clustering", name=name, method=method, on=input_set.get("name", ""),
                              n_labelled=int(labelled.sum()), **scores, silhouette_metric=metric, accuracy=None,
                              n_predicted=None, n_predicted_labelled=None, predicted_on=None,
                              cluster_names=list(stored["names"]) if "names" in stored else None,
                              level=params.get("level"), levels=params.get("levels"), parent=params.get("parent"),
                              mapped=mapped_scores(truth, ids, label_map) if label_map else None)

    if "predicted" in stored:
        test_keys = list(stored["test_keys"])
        predicted = np.array(stored["predicted"], dtype=object)
        test_truth = np.array([to_space(labels.get(k, "")) for k in test_keys], dtype=object)
        known = test_truth != ""
        report.n_predicted, report.n_predicted_labelled = len(test_keys), int(known.sum())
        report.predicted_on = params.get("sets", {}).get("test", {}).get("name")
        if known.any():
            report.accuracy = classification_accuracy(test_truth[known].astype(str), predicted[known].astype(str))
        else:
            reporter.warn(f"'{name}': none of its {len(test_keys)} classified test items has a label; "
                          "classification accuracy left out")
    return report


def evaluate_zero_shot(workspace: Workspace, info: SetInfo, *, labels: dict[str, str] | None = None
                       ) -> ClassificationReport:
    """Zero-shot classification (argmax of the stored image x prompt similarities) against the labels.

    Items whose label is not one of the set's classes (after its class map) are left out and counted.
    """
    labels = _labels(workspace) if labels is None else labels
    classes = json.loads(info.attrs.get("classes", "[]"))
    if not classes:
        raise InputError(f"set '{info.name}' has no 'classes' attribute; re-embed with {opt('prompt')}")
    class_map = json.loads(info.attrs.get("provenance", "{}")).get("class_map") or {}
    keys, sims = workspace.read_set(info.id)
    return _classification_report(info.name, keys, sims, classes, labels, class_map)


def _classification_report(name: str, keys: list[str], sims: np.ndarray, classes: list[str], labels: dict[str, str],
                           class_map: dict[str, str]) -> ClassificationReport:
    truth = np.array([class_map.get(labels.get(k, ""), "") if class_map else labels.get(k, "") for k in keys],
                     dtype=object)
    usable = np.isin(truth, classes)
    n_labelled = int(sum(1 for k in keys if k in labels))
    if not usable.any():
        raise InputError(f"no item of '{name}' has a label among its classes; {NO_LABELS_HINT}")
    predicted = np.asarray(classes, dtype=object)[np.argmax(sims[usable], axis=1)].astype(str)
    scores = clustering_report(truth[usable].astype(str), predicted)
    return ClassificationReport(kind="zero-shot", name=name, method="zero-shot", on=name, n_labelled=int(usable.sum()),
                                **scores, silhouette_metric=None,
                                accuracy=classification_accuracy(truth[usable].astype(str), predicted),
                                n_predicted=int(usable.sum()), n_predicted_labelled=int(usable.sum()),
                                predicted_on=name, n_outside_classes=n_labelled - int(usable.sum()))


def prototype_sets(workspace: Workspace, model: str | None = None,
                   reporter: Reporter | None = None) -> list[tuple[SetInfo, Path]]:
    """Image sets embedded with a fine-tuned model folder that holds a classifier (``clipclust finetune``),
    with that folder.  A folder whose weights changed since the set was embedded is left out with a warning."""
    from clipclust.models.checkpoint import read_classifier
    from clipclust.models.clip import model_identity, parse_model_spec

    found = []
    for info in workspace.list_sets():
        if info.kind != "image" or (model and not info.model.endswith(model)):
            continue
        spec_text = json.loads(info.attrs.get("provenance", "{}")).get("model_spec", "")
        folder = Path(spec_text).expanduser() if spec_text else None
        if folder is None or not folder.is_dir() or read_classifier(folder) is None:
            continue
        if model_identity(parse_model_spec(str(folder)), workspace.memo_get, workspace.memo_put) != info.model:
            if reporter is not None:
                reporter.warn(f"{folder} changed since its images were embedded; embed them again with that "
                              "model to evaluate its prototypes")
            continue
        found.append((info, folder))
    return found


def evaluate_prototypes(workspace: Workspace, info: SetInfo, folder: Path, *,
                        labels: dict[str, str] | None = None) -> ClassificationReport:
    """Zero-shot classification with a fine-tuned model's class prototypes: the nearest prototype (cosine)
    of each image vector embedded with that model, as LatteCLIP infers."""
    from clipclust.models.checkpoint import read_classifier

    labels = _labels(workspace) if labels is None else labels
    classifier = read_classifier(folder)
    assert classifier is not None
    classes, vectors, meta = classifier
    keys, image_vecs = workspace.read_set(info.id)
    norms = np.maximum(np.linalg.norm(image_vecs, axis=1, keepdims=True), 1e-12)
    name = f"{meta.get('kind', 'prototypes')}:{folder.name}"
    report = _classification_report(name, keys, (image_vecs / norms) @ vectors.T, classes, labels, {})
    return dataclasses.replace(report, method=f"{meta.get('method', 'finetune')} {meta.get('kind', 'prototypes')}")


def probe_set(workspace: Workspace, on: str = "image", kind: str = "svm", *, split: tuple[str, str] | None = None,
              test_fraction: float = 0.2, temperature: float | None = None, scale: str = "auto", seed: int = 0,
              model: str | None = None, reporter: Reporter | None = None) -> ProbeReport:
    """The Dissecting CLIP thesis' linear probe on a stored set: how linearly separable its labelled items are.

    The train/test split is two split names (``split=("train", "test")``) or, without them, a stratified
    hold-out of ``test_fraction``.  ``scale`` "auto" standardises features but not cosine logits
    (zero-shot, agnostic), as the thesis does; ``temperature`` divides the rows first.
    """
    reporter = reporter or SilentReporter()
    if kind not in ("svm", "logreg"):
        raise InputError(f"{opt('probe')} {kind}: expected svm or logreg")
    if scale not in ("auto", "standard", "none"):
        raise InputError(f"{opt('scale')} {scale}: expected auto, standard or none")
    if temperature is not None and not 0 < temperature < float("inf"):  # nan and inf too
        raise InputError(f"{opt('temperature')} {temperature}: expected a number above 0, such as 0.03")
    info = resolve_item_set(workspace, on, model)
    if len(info.shape) != 2:
        raise InputError(f"set '{info.name}' holds rows of shape {tuple(info.shape[1:])}, not one vector per item; "
                         "probe another set")
    keys, X = workspace.read_set(info.id)
    items = workspace.items()
    label_of = {s: lab for s, lab in zip(items.sha256, items.label) if lab}
    split_of = dict(zip(items.sha256, items.split))
    rows = [i for i, k in enumerate(keys) if k in label_of]
    if not rows:
        raise InputError(f"no item of '{info.name}' has a label; the probe needs labels: embed the images from "
                         f"class folders or with {opt('labels')} CSV")
    y = np.array([label_of[keys[i]] for i in rows], dtype=str)
    X = X[rows]
    if split is not None:
        train_name, test_name = split
        item_split = np.array([split_of.get(keys[i], "") for i in rows], dtype=object)
        train, test = np.flatnonzero(item_split == train_name), np.flatnonzero(item_split == test_name)
        for part, found in ((train_name, train), (test_name, test)):
            if not found.size:
                raise InputError(f"no labelled item of '{info.name}' is in split '{part}'; pass {opt('split')} "
                                 f"TRAIN,TEST with names {step('info')} lists, or leave {opt('split')} out for a "
                                 "hold-out")
        how = f"splits {train_name}/{test_name}"
    else:
        try:
            train, test = stratified_holdout(y, test_fraction, seed)
        except ValueError as exc:
            raise InputError(f"{opt('test_fraction')} {test_fraction}: {str(exc).rstrip('.')}") from None
        if not test.size:
            raise InputError(f"'{info.name}' has too few labelled items for a hold-out; label more images")
        how = f"stratified hold-out {test_fraction:g} (seed {seed})"
    standardize = info.kind not in LOGIT_KINDS if scale == "auto" else scale == "standard"
    with warnings.catch_warnings(record=True) as caught, reporter.task(f"{kind} probe on {info.name}", None):
        warnings.simplefilter("always")
        try:
            result = linear_probe(X[train], y[train], X[test], y[test], kind=kind,  # type: ignore[arg-type]
                                  temperature=temperature, standardize=standardize)
        except ValueError as exc:
            raise InputError(f"{opt('probe')} {kind} on '{info.name}': {str(exc).rstrip('.')}") from None
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            reporter.warn(str(warning.message))
    return ProbeReport(name=f"probe:{kind}:{info.name}", probe=kind, on=info.name, set_kind=info.kind, split=how,
                       n_train=int(train.size), n_test=int(test.size), n_classes=int(np.unique(y).shape[0]),
                       accuracy=result.accuracy, temperature=temperature, standardize=standardize,
                       mean_entropy=result.mean_entropy, max_entropy=result.max_entropy)


def evaluate(workspace: Workspace, names: Sequence[str] = (), *, zero_shot: bool = False, probe: str | None = None,
             on: str = "image", model: str | None = None, split: tuple[str, str] | None = None,
             test_fraction: float = 0.2, temperature: float | None = None, scale: str = "auto", seed: int = 0,
             metric: Metric = "euclidean", label_map: dict[str, str] | None = None,
             reporter: Reporter | None = None) -> EvaluationResult:
    """Reports for the named clusterings (all of them when none is named and no zero-shot or probe is
    asked), every stored zero-shot set with ``zero_shot``, and a probe on ``on`` with ``probe``.

    A clustering named explicitly must have labelled items; among "all", those without labels get the
    internal metrics and a warning, unless none has labels (then it is an error).  A level of a taxonomy
    brings its other levels; ``label_map`` (label -> coarser label) adds scores against the mapped labels.
    """
    reporter = reporter or SilentReporter()
    result = EvaluationResult()
    if metric not in ("euclidean", "cosine"):
        raise InputError(f"{opt('metric')} {metric}: expected euclidean or cosine")
    if not workspace.exists():
        raise InputError(f"no workspace at {workspace.path}; run {step('embed', 'IMAGES')} first or pass {opt('cache')}")
    labels = _labels(workspace)
    explicit = bool(names)
    if explicit:
        chosen = with_levels(workspace, [choose_clustering(workspace, n) for n in dict.fromkeys(names)])
    elif zero_shot or probe:
        chosen = []
    else:
        chosen = with_levels(workspace, workspace.list_clusterings())
        if not chosen:
            raise InputError(f"the workspace holds no clustering yet; run {step('cluster')} first "
                             f"(or ask for {opt('zero_shot')} or {opt('probe')})")
    for name in chosen:
        result.reports[name] = evaluate_clustering(workspace, name, metric=metric, seed=seed, labels=labels,
                                                   require_labels=explicit, label_map=label_map, reporter=reporter)
    if chosen and not explicit:
        unlabelled = [n for n in chosen if result.reports[n].n_labelled == 0]
        if len(unlabelled) == len(chosen):
            raise InputError(f"no item of the clusterings ({', '.join(chosen)}) has a label; {NO_LABELS_HINT}")
        for n in unlabelled:
            reporter.warn(f"clustering '{n}' has no labelled item; only its internal metrics are reported")
    if zero_shot:
        sets = [s for s in workspace.list_sets() if s.kind == "zeroshot" and (not model or s.model.endswith(model))]
        tuned = prototype_sets(workspace, model, reporter)
        if not sets and not tuned:
            embed_prompts = step("embed", f"IMAGES {opt('prompt')} TEMPLATE")
            raise InputError(f"no zero-shot set is stored; run {embed_prompts} first "
                             f"(or embed with a model made by {step('finetune')})")
        names_seen = [s.name for s in sets]
        for info in sets:
            key = info.name if names_seen.count(info.name) == 1 else f"{info.name} [{info.model}]"
            result.reports[key] = dataclasses.replace(evaluate_zero_shot(workspace, info, labels=labels), name=key)
        for info, folder in tuned:
            prototypes = evaluate_prototypes(workspace, info, folder, labels=labels)
            key = prototypes.name if prototypes.name not in result.reports else f"{prototypes.name} [{info.model}]"
            result.reports[key] = dataclasses.replace(prototypes, name=key)
    if probe:
        probed = probe_set(workspace, on, probe, split=split, test_fraction=test_fraction, temperature=temperature,
                           scale=scale, seed=seed, model=model, reporter=reporter)
        result.reports[probed.name] = probed
    result.warnings = list(getattr(reporter, "warnings", []))
    return result
