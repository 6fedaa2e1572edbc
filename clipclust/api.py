"""The public functions: one per command, named as the command, taking its options as keyword arguments.

Each takes the workspace (a :class:`~clipclust.store.Workspace` or the path of its file) first and
returns the command's report, a dataclass with ``to_dict()``.  Option names are the command's flags
written as Python names (``--batch-size`` -> ``batch_size``, ``--prompt`` -> ``prompts``, a list);
errors are :class:`~clipclust.errors.InputError` (bad input) or
:class:`~clipclust.errors.ClipclustError` (a runtime failure).  The heavy imports (torch, the models)
happen inside the calls, so ``import clipclust`` stays light.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any, Sequence

from clipclust.store import Workspace

if TYPE_CHECKING:  # pragma: no cover
    from clipclust.commands.check import CheckResult
    from clipclust.commands.describe import DescribeSummary, ImportSummary
    from clipclust.commands.discover import DiscoverReport
    from clipclust.commands.embed import EmbedSummary
    from clipclust.commands.evaluate import EvaluationResult
    from clipclust.commands.finetune import FinetuneSummary
    from clipclust.commands.info import WorkspaceInfo
    from clipclust.commands.merge import MergeReport
    from clipclust.commands.report import ReportSummary
    from clipclust.commands.visualize import VisualSummary
    from clipclust.methods.registry import ClusteringSummary

__all__ = ["check", "cluster", "describe", "discover", "embed", "evaluate", "export", "finetune", "import_descriptions",
           "info", "merge", "report", "visualize", "workspace"]

PathLike = str | os.PathLike[str]


def workspace(where: "Workspace | PathLike") -> Workspace:
    """The workspace itself, or the one whose file is at ``where`` (created by the first write)."""
    return where if isinstance(where, Workspace) else Workspace(os.fspath(where))


def _paths(inputs: PathLike | Sequence[PathLike] | None) -> list[str] | None:
    if inputs is None:
        return None
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    return [os.fspath(p) for p in inputs]


def embed(ws: "Workspace | PathLike", inputs: PathLike | Sequence[PathLike], **options: Any) -> "EmbedSummary":
    """CLIP image vectors of the images under ``inputs``; with ``prompts=["This is digit <>"]`` also the text,
    fused and zero-shot sets, with ``agnostic=...`` the class-agnostic ones (``clipclust embed``).

    Options: the fields of :class:`~clipclust.commands.embed.EmbedOptions` (``model``, ``prompts``,
    ``classes``, ``fuse``, ``split``, ``device``, ``precision``, ``batch_size``, ...), plus ``reporter``
    and ``encoder`` (an already loaded CLIP encoder).
    """
    from clipclust.commands.embed import EmbedOptions, embed as run

    reporter, encoder = options.pop("reporter", None), options.pop("encoder", None)
    if isinstance(options.get("prompts"), str):
        options["prompts"] = [options["prompts"]]
    return run(workspace(ws), _paths(inputs) or [], EmbedOptions(**options), reporter=reporter, encoder=encoder)


def describe(ws: "Workspace | PathLike", inputs: PathLike | Sequence[PathLike] | None = None,
             **options: Any) -> "DescribeSummary":
    """One description per image (or per group of images) by a vision-language model, conditioned on
    ``criterion`` or ``prompt`` (``clipclust describe``): ``vlm``, ``mmproj``, ``group_size``, ``group_by``,
    ``on``, ``split``, ``describer`` (an already loaded one), ``reporter``."""
    from clipclust.commands.describe import describe_items

    return describe_items(workspace(ws), _paths(inputs), **options)


def import_descriptions(ws: "Workspace | PathLike", file: PathLike, **options: Any) -> "ImportSummary":
    """Descriptions made elsewhere (JSONL or CSV) stored as a description set (``clipclust describe --from``):
    ``text_field``, ``path_field``, ``label_field``, ``split``, ``reporter``."""
    from clipclust.commands.describe import import_into_workspace

    return import_into_workspace(workspace(ws), file, **options)


def discover(ws: "Workspace | PathLike", **options: Any) -> "DiscoverReport":
    """Criteria a description set could be clustered by, each with its values and a group estimate
    (``clipclust discover``): ``llm`` (or ``generator``, an open one), ``on``, ``n``, ``sample``, ``batch``,
    ``label_sample``, ``seed``, ``split``, ``text_model``, ``force``, the LLM's ``n_threads``, ``n_ctx``, ...;
    the result is stored, and the same request again returns it without loading a model."""
    from clipclust.commands.discover import discover as run

    return run(workspace(ws), **options)


def cluster(ws: "Workspace | PathLike", method: str = "kmeans", **options: Any) -> "ClusteringSummary":
    """Cluster a stored set and keep the result under a name (``clipclust cluster``): ``k``, ``on``, ``name``,
    ``seed``, ``split``, ``refine``, ``force`` and the method's own options (``criterion="mood"``,
    ``llm="qwen.gguf"`` for ictc; ``clipclust cluster --help`` lists them per method)."""
    from clipclust.commands.cluster import run_clustering

    return run_clustering(workspace(ws), method=method, **options)


def finetune(ws: "Workspace | PathLike", out: PathLike, method: str = "latteclip", *, resume: bool = False,
             **options: Any) -> "FinetuneSummary":
    """Fine-tune a CLIP model on the workspace's images without labels (``clipclust finetune``) into the
    folder ``out``: ``classes``, ``model``, ``epochs``, ``lr``, ``batch_size``, ... and the method's own
    options (LatteCLIP's ``texts``, ``alpha``, ``momentum``); ``reporter``, ``encoder``."""
    from clipclust.commands.finetune import FinetuneOptions, finetune as run

    hooks = {key: options.pop(key) for key in ("reporter", "encoder", "on_step", "on_epoch") if key in options}
    return run(workspace(ws), out, FinetuneOptions.of(method=method, **options), resume=resume, **hooks)


def evaluate(ws: "Workspace | PathLike", *names: str, **options: Any) -> "EvaluationResult":
    """Scores of the named clusterings (all when none is named) against the stored labels
    (``clipclust evaluate``): ``zero_shot``, ``probe``, ``on``, ``temperature``, ``metric``, ``seed``, ..."""
    from clipclust.commands.evaluate import evaluate as run

    return run(workspace(ws), list(names), **options)


def visualize(ws: "Workspace | PathLike", clustering: str | None = None, kind: str = "tsne",
              out: PathLike | None = None, **options: Any) -> "VisualSummary":
    """One PNG of a stored clustering: ``kind`` tsne, pca, confusion or montage (``clipclust visualize``)."""
    from clipclust.commands.visualize import visualize as run

    return run(workspace(ws), clustering, kind, out, **options)


def report(ws: "Workspace | PathLike", *names: str, out: PathLike = "report.html", **options: Any) -> "ReportSummary":
    """One offline HTML page of the named clusterings (all when none is named) at ``out`` (``clipclust report``):
    ``thumbnails`` inline, folder or none, ``layout``, ``map_on``, ``per_cluster``, ``borderline``, ``thumb``, ..."""
    from clipclust.commands.report import report as run

    return run(workspace(ws), list(names), out, **options)


def export(ws: "Workspace | PathLike", clustering: str | None = None, fmt: str = "csv",
           out: PathLike | None = None) -> str | None:
    """A stored clustering as CSV or JSON lines (``clipclust export``): written to ``out``, or returned as
    text when ``out`` is None."""
    from clipclust.commands.export import clustering_rows, write_rows

    rows = clustering_rows(workspace(ws), clustering)
    if out is not None:
        with open(out, "w", encoding="utf-8", newline="") as stream:
            write_rows(rows, fmt, stream)
        return None
    buffer = io.StringIO()
    write_rows(rows, fmt, buffer)
    return buffer.getvalue()


def merge(inputs: Sequence[PathLike], output: PathLike, **options: Any) -> "MergeReport":
    """Join the workspaces of a sharded job into ``output`` (``clipclust merge``)."""
    from clipclust.commands.merge import merge_workspaces

    return merge_workspaces([os.fspath(p) for p in inputs], os.fspath(output), **options)


def check(ws: "Workspace | PathLike", *, repair: bool = False) -> "CheckResult":
    """Verify the workspace file; ``repair`` salvages what reads into ``NAME.repaired.h5`` (``clipclust check``)."""
    from clipclust.commands.check import check as run

    return run(workspace(ws), repair=repair)


def info(ws: "Workspace | PathLike") -> "WorkspaceInfo":
    """What the workspace holds: items, sets and their sizes, clusterings (``clipclust info``)."""
    from clipclust.commands.info import info as run

    return run(workspace(ws))
