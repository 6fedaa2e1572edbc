"""The fine-tuning output folder: an open_clip local-dir model that `embed --model DIR` loads, the class
prototypes as a classifier, the run's record, and the state a resumed run continues from.

    DIR/open_clip_config.json       the base model's config (model_cfg + preprocess_cfg)
    DIR/open_clip_model.safetensors the tuned weights (the file open_clip's local-dir loader prefers)
    DIR/prototypes.npy, .json       (C, D) class vectors and their class names: evaluate --zero-shot uses them
    DIR/finetune.json               parameters, base model identity, progress and per-epoch history
    DIR/state/                      optimiser, scaler, prototypes and zero-shot pseudo-labels for --resume

Every file is written to a temporary name and renamed, finetune.json last, so an interrupted save leaves
the previous checkpoint readable.  state/ sits one level down so that open_clip never takes it for weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipclust.core.vectors import unit_rows
from clipclust.errors import InputError
from clipclust.models.clip import OPEN_CLIP_CONFIG, ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

WEIGHTS = "open_clip_model.safetensors"
RECORD = "finetune.json"
PROTOTYPES = "prototypes.npy"
PROTOTYPE_CLASSES = "prototypes.json"
STATE = "state"


def _replace(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append .npy to the temporary name
        np.save(fh, array.astype(np.float32))


def write_json(path: Path, data: Any) -> None:
    _replace(path, lambda p: p.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def require_open_clip(spec: ModelSpec) -> None:
    """Fine-tuned weights are saved in open_clip's layout, so the base must be an open_clip model."""
    if spec.backend != "open_clip":
        raise InputError(f"'{spec.raw}' is a transformers model; fine-tuning needs an open_clip model "
                         "(ARCH/PRETRAINED, hf-hub:ORG/NAME or an open_clip folder)")


def base_config(spec: ModelSpec, model: Any) -> dict[str, Any]:
    """The open_clip config of the base model, for the tuned model's folder."""
    import open_clip

    require_open_clip(spec)
    if spec.path:
        folder = Path(spec.path) if Path(spec.path).is_dir() else Path(spec.path).parent
        config = json.loads((folder / OPEN_CLIP_CONFIG).read_text()) if (folder / OPEN_CLIP_CONFIG).is_file() else {}
        model_cfg = config.get("model_cfg", config) or open_clip.get_model_config(spec.arch)
    else:
        model_cfg = open_clip.get_model_config(spec.arch)
    if not model_cfg:
        raise InputError(f"no open_clip config found for '{spec.raw}'")
    preprocess = dict(open_clip.get_model_preprocess_cfg(model))
    return {"model_cfg": model_cfg, "preprocess_cfg": {k: list(v) if isinstance(v, tuple) else v
                                                        for k, v in preprocess.items()}}


def has_checkpoint(out: Path) -> bool:
    return (out / RECORD).is_file()


def read_record(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / RECORD).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{out / RECORD}: not a readable fine-tuning record ({exc})") from None


def save(out: Path, *, model: "torch.nn.Module", config: dict[str, Any], classes: list[str],
         classifier: np.ndarray, classifier_kind: str, state: dict[str, Any], record: dict[str, Any]) -> None:
    """Write one checkpoint (weights, classifier, resume state, then the record that makes it valid)."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / STATE).mkdir(exist_ok=True)
    write_json(out / OPEN_CLIP_CONFIG, config)
    weights = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    _replace(out / WEIGHTS, lambda p: save_file(weights, str(p), metadata={"format": "pt"}))
    _replace(out / PROTOTYPES, lambda p: _save_npy(p, classifier))
    write_json(out / PROTOTYPE_CLASSES, {"classes": classes, "kind": classifier_kind, "method": record["method"],
                                         "step": record["step"]})
    _replace(out / STATE / "train.pt", lambda p: torch.save(state, p))
    write_json(out / RECORD, record)


def load_state(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The resume state of the checkpoint ``record`` describes; a mismatch means the save was interrupted."""
    import torch

    path = out / STATE / "train.pt"
    if not path.is_file():
        raise InputError(f"{out}: the checkpoint has no {STATE}/train.pt to resume from; start a new run")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("step") != record.get("step"):
        raise InputError(f"{out}: the resume state (step {state.get('step')}) does not match {RECORD} "
                         f"(step {record.get('step')}); start a new run in another folder")
    return state


def load_weights(out: Path, model: "torch.nn.Module") -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(out / WEIGHTS)))


def read_classifier(folder: Path) -> tuple[list[str], np.ndarray, dict[str, Any]] | None:
    """(classes, (C, D) unit vectors, meta) of a fine-tuned model folder, or None if it has none."""
    if not (folder / PROTOTYPES).is_file() or not (folder / PROTOTYPE_CLASSES).is_file():
        return None
    meta = json.loads((folder / PROTOTYPE_CLASSES).read_text())
    vectors = unit_rows(np.load(folder / PROTOTYPES), np.float32)
    return list(meta["classes"]), vectors, meta
