"""Metrics for clusterings and classifiers, on plain arrays.

Clustering metrics compare cluster ids with ground-truth labels *after* a clustering is made; nothing
here is used while clustering. Labels may be integers or strings: they are encoded with ``np.unique``
before any computation, so ``"cat"``/``"dog"`` and ``0``/``1`` behave the same.

Noise: density methods (HDBSCAN) mark unclustered points with the id ``-1``. ACC and purity never
credit a noise point (it counts as wrong), silhouette leaves noise points out, and NMI/AMI/ARI/RI
treat noise as one more cluster (the scikit-learn convention).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import log_softmax
from sklearn import metrics as skm

__all__ = [
    "NOISE_ID",
    "ClusterAccuracy",
    "ProbeResult",
    "classification_accuracy",
    "cluster_accuracy",
    "cluster_sizes",
    "clustering_report",
    "contingency_table",
    "linear_probe",
    "logit_entropy",
    "purity",
    "silhouette",
    "stratified_holdout",
]

NOISE_ID = -1
"""Cluster id that HDBSCAN gives to points it leaves unclustered."""

SILHOUETTE_MAX_POINTS = 5000
"""Silhouette is O(N^2); above this many points it is computed on a seeded random sample."""


class ClusterAccuracy(NamedTuple):
    """ACC and the one-to-one cluster->class matching that produced it."""

    accuracy: float
    mapping: dict[Any, Any]  # cluster id -> matched class; unmatched clusters are absent


class ProbeResult(NamedTuple):
    """Outcome of :func:`linear_probe`."""

    accuracy: float
    mean_entropy: float  # mean Shannon entropy (nats) of softmax(X / temperature) over train+test rows
    max_entropy: float  # log(D): the entropy of a uniform softmax over D features
    kind: str
    temperature: float | None
    standardize: bool


def _as_1d(values: Sequence[Hashable] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one label per item); got shape {array.shape}.")
    return array


def _check_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    true = _as_1d(y_true, "y_true")
    pred = _as_1d(y_pred, "y_pred")
    if true.shape[0] != pred.shape[0]:
        raise ValueError(
            f"y_true has {true.shape[0]} labels but y_pred has {pred.shape[0]}; pass one of each per item."
        )
    if true.shape[0] == 0:
        raise ValueError("No items to evaluate: y_true and y_pred are empty.")
    return true, pred


def _to_python(value: Any) -> Any:
    """numpy scalars -> Python scalars, so results survive ``json.dumps``."""
    return value.item() if isinstance(value, np.generic) else value


def _noise_mask(pred: np.ndarray) -> np.ndarray:
    if pred.dtype.kind in "iu":
        return pred == NOISE_ID
    return np.zeros(pred.shape[0], dtype=bool)


def contingency_table(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of (cluster, class) pairs: rows are clusters, columns are classes.

    Returns ``(table, clusters, classes)`` where ``clusters``/``classes`` are the sorted unique values
    that index the rows/columns. Noise points (id -1) are left out of the table; every other cluster
    id gets a row.
    """
    true, pred = _check_pair(y_true, y_pred)
    keep = ~_noise_mask(pred)
    classes = np.unique(true)
    clusters, cluster_index = np.unique(pred[keep], return_inverse=True)
    class_index = np.searchsorted(classes, true[keep])
    table = np.zeros((clusters.shape[0], classes.shape[0]), dtype=np.int64)
    np.add.at(table, (cluster_index, class_index), 1)
    return table, clusters, classes


def cluster_accuracy(y_true, y_pred) -> ClusterAccuracy:
    """Clustering accuracy (ACC): the best one-to-one matching of clusters to classes.

    The matching maximises the matched counts of the (clusters x classes) contingency table with the
    Hungarian algorithm (scipy ``linear_sum_assignment``), which handles rectangular tables: with more
    clusters than classes the extra clusters stay unmatched and their items count as wrong; with
    fewer clusters than classes some classes get no cluster. Noise points (id -1) count as wrong.
    ACC is invariant to renaming cluster ids, which is why it is the standard score for clusterings.
    """
    true, _ = _check_pair(y_true, y_pred)
    table, clusters, classes = contingency_table(y_true, y_pred)
    if table.size == 0:  # every point is noise
        return ClusterAccuracy(0.0, {})
    rows, cols = linear_sum_assignment(table, maximize=True)
    matched = int(table[rows, cols].sum())
    mapping = {_to_python(clusters[r]): _to_python(classes[c]) for r, c in zip(rows, cols)}
    return ClusterAccuracy(matched / true.shape[0], mapping)


def purity(y_true, y_pred) -> float:
    """Sum over clusters of the largest true-class count, divided by N (Benedetto's Dissecting CLIP thesis).

    Unlike ACC, several clusters may vote for the same class, so purity rises with the number of
    clusters; report it next to ACC, not instead of it. Noise points (id -1) count as wrong.
    """
    true, _ = _check_pair(y_true, y_pred)
    table, _, _ = contingency_table(y_true, y_pred)
    if table.size == 0:
        return 0.0
    return float(table.max(axis=1).sum() / true.shape[0])


def cluster_sizes(y_pred) -> dict[Any, int]:
    """Items per cluster id (noise included under -1), ordered by id."""
    ids, counts = np.unique(_as_1d(y_pred, "y_pred"), return_counts=True)
    return {_to_python(i): int(c) for i, c in zip(ids, counts)}


def silhouette(
    X: np.ndarray,
    y_pred,
    metric: Literal["cosine", "euclidean"] = "cosine",
    max_points: int = SILHOUETTE_MAX_POINTS,
    seed: int = 0,
) -> float | None:
    """Silhouette of a clustering on the vectors that were clustered; None when it is undefined.

    Silhouette needs 2 <= clusters <= N - 1; a clustering with one cluster (or where every point is its
    own cluster) has none, and returning None says so instead of raising. Noise points are left out.
    Above ``max_points`` items it is estimated on a seeded random sample (exact silhouette is O(N^2)).
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', not {metric!r}.")
    X = np.asarray(X)
    pred = _as_1d(y_pred, "y_pred")
    if X.ndim != 2 or X.shape[0] != pred.shape[0]:
        raise ValueError(
            f"X must be (N, D) with one row per label; got X {X.shape} and {pred.shape[0]} labels."
        )
    keep = ~_noise_mask(pred)
    X, pred = X[keep], pred[keep]
    n_clusters = np.unique(pred).shape[0]
    if not 2 <= n_clusters <= X.shape[0] - 1:
        return None
    if X.shape[0] > max_points:
        sample = np.random.default_rng(seed).choice(X.shape[0], size=max_points, replace=False)
        X, pred = X[sample], pred[sample]
        if not 2 <= np.unique(pred).shape[0] <= X.shape[0] - 1:
            return None
    return float(skm.silhouette_score(X, pred, metric=metric))


def clustering_report(
    y_true,
    y_pred,
    X: np.ndarray | None = None,
    metric: Literal["cosine", "euclidean"] = "cosine",
    seed: int = 0,
) -> dict[str, Any]:
    """Every clustering metric in one JSON-serialisable dict, for ``clipclust evaluate``.

    Keys: ``n_items``, ``n_clusters`` (noise not counted), ``n_noise``, ``cluster_sizes`` ({str(id): count}),
    ``silhouette`` (None without ``X`` or when undefined) and, when ``y_true`` is given, ``n_classes``,
    ``acc``, ``nmi``, ``ami``, ``ari``, ``rand_index``, ``purity``, ``mapping`` ({str(cluster): class},
    the Hungarian matching behind ACC) and ``unmatched_classes`` (classes no cluster was matched to).
    With ``y_true=None`` (unlabelled data) those keys are None, so every report has the same shape.
    Dictionary keys are strings because JSON object keys are strings.
    """
    pred = _as_1d(y_pred, "y_pred")
    if pred.shape[0] == 0:
        raise ValueError("No items to evaluate: y_pred is empty.")
    noise = _noise_mask(pred)
    report: dict[str, Any] = {
        "n_items": int(pred.shape[0]),
        "n_clusters": int(np.unique(pred[~noise]).shape[0]),
        "n_noise": int(noise.sum()),
        "cluster_sizes": {str(k): v for k, v in cluster_sizes(pred).items()},
        "silhouette": None if X is None else silhouette(X, pred, metric=metric, seed=seed),
        "n_classes": None,
        "acc": None,
        "nmi": None,
        "ami": None,
        "ari": None,
        "rand_index": None,
        "purity": None,
        "mapping": None,
        "unmatched_classes": None,
    }
    if y_true is None:
        return report
    true, pred = _check_pair(y_true, pred)
    classes = np.unique(true)
    matching = cluster_accuracy(true, pred)
    matched = set(matching.mapping.values())
    report.update(
        n_classes=int(classes.shape[0]),
        acc=float(matching.accuracy),
        nmi=float(skm.normalized_mutual_info_score(true, pred)),
        ami=float(skm.adjusted_mutual_info_score(true, pred)),
        ari=float(skm.adjusted_rand_score(true, pred)),
        rand_index=float(skm.rand_score(true, pred)),
        purity=purity(true, pred),
        mapping={str(k): v for k, v in matching.mapping.items()},
        unmatched_classes=[_to_python(c) for c in classes if _to_python(c) not in matched],
    )
    return report


def classification_accuracy(y_true, y_pred) -> float:
    """Fraction of items whose predicted class equals the true class (no matching: names must agree)."""
    true, pred = _check_pair(y_true, y_pred)
    return float(np.mean(true == pred))


def logit_entropy(logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
    """Shannon entropy (nats) of softmax(logits / temperature), one value per row.

    The Dissecting CLIP thesis uses it to show how flat class-agnostic cosine logits are: close to log(D)
    means the prompts barely discriminate, which is why a temperature below 1 is applied.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, D); got shape {logits.shape}.")
    if temperature is not None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        logits = logits / temperature
    log_p = log_softmax(logits, axis=1)
    return -(np.exp(log_p) * log_p).sum(axis=1)


def linear_probe(
    X_train: np.ndarray,
    y_train,
    X_test: np.ndarray,
    y_test,
    kind: Literal["svm", "logreg"] = "svm",
    temperature: float | None = None,
    standardize: bool = True,
) -> ProbeResult:
    """Linear-probe accuracy of features, as in Benedetto's Dissecting CLIP thesis.

    Features are divided by ``temperature`` (for cosine logits; None = unchanged), standardised with a
    StandardScaler fitted on the training rows (``standardize``), then classified by
    ``SVC(kernel="linear", C=1, random_state=42)`` or ``LogisticRegression(max_iter=1000)``. A linear
    probe measures how linearly separable the classes are, i.e. how much the features know.

    The thesis standardises image features (its section 2.2.3) but fits the SVM on the raw logits
    (3.2.3, 4.2). Pass ``standardize=False`` for class-agnostic logits: a StandardScaler undoes any
    global scale, so with it the temperature cannot change the accuracy (only the entropy); without
    it, 1/temperature acts as the SVM's regularisation strength, which is what the thesis's temperature
    table measures. A warning is emitted when both are set. The mean logit entropy (see
    :func:`logit_entropy`) is over train and test rows together.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    y_train = _as_1d(y_train, "y_train")
    y_test = _as_1d(y_test, "y_test")
    if X_train.ndim != 2 or X_test.ndim != 2 or X_train.shape[1] != X_test.shape[1]:
        raise ValueError(
            f"X_train and X_test must be (N, D) with the same D; got {X_train.shape} and {X_test.shape}."
        )
    if X_train.shape[0] != y_train.shape[0] or X_test.shape[0] != y_test.shape[0]:
        raise ValueError("Pass one label per row: X_train/y_train or X_test/y_test lengths differ.")
    if X_train.shape[0] == 0 or X_test.shape[0] == 0:
        raise ValueError("The train and test sets must both be non-empty.")
    if np.unique(y_train).shape[0] < 2:
        raise ValueError("The training labels hold a single class; a probe needs at least two.")
    if kind == "svm":
        classifier = SVC(kernel="linear", C=1.0, random_state=42)
    elif kind == "logreg":
        classifier = LogisticRegression(max_iter=1000)
    else:
        raise ValueError(f"kind must be 'svm' or 'logreg', not {kind!r}.")
    if temperature is not None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if standardize:
            warnings.warn(
                "linear_probe: with standardize=True the temperature changes only the entropy, not the "
                "accuracy (StandardScaler removes the scale); pass standardize=False for logits.",
                stacklevel=2,
            )
        X_train, X_test = X_train / temperature, X_test / temperature
    if standardize:
        scaler = StandardScaler().fit(X_train)
        classifier.fit(scaler.transform(X_train), y_train)
        predictions = classifier.predict(scaler.transform(X_test))
    else:
        classifier.fit(X_train, y_train)
        predictions = classifier.predict(X_test)
    entropies = logit_entropy(np.concatenate([X_train, X_test]))  # already divided by temperature
    return ProbeResult(
        accuracy=classification_accuracy(y_test, predictions),
        mean_entropy=float(entropies.mean()),
        max_entropy=float(np.log(X_train.shape[1])),
        kind=kind,
        temperature=temperature,
        standardize=standardize,
    )


def stratified_holdout(labels, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split item indices into (train, test), keeping class proportions, for data without named splits.

    Every class keeps at least one training item, and a class with two or more items gets at least
    one test item, so that a probe sees each class. Indices are returned sorted; the split depends
    only on ``labels``, ``test_fraction`` and ``seed``.
    """
    labels = _as_1d(labels, "labels")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}.")
    if labels.shape[0] < 2:
        raise ValueError("Need at least two labelled items to make a train/test split.")
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_fraction * members.shape[0]))
        n_test = min(max(n_test, 1 if members.shape[0] >= 2 else 0), members.shape[0] - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
