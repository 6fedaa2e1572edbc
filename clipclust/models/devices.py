"""One answer to "which device and which precision": every model backend asks here.

``auto`` means the first CUDA device when torch sees one, else the CPU; a CUDA device asked for on a
machine without one is refused (never silently replaced by the CPU).  Precisions are named fp32, fp16
and bf16; ``auto`` is fp32 on the CPU and, on a GPU, what the caller's models run best in: fp16 for CLIP
encoders (the default), bf16 for language models (fp16 on a GPU without bf16).
"""

from __future__ import annotations

from typing import Any

from clipclust.errors import InputError, opt

__all__ = ["PRECISIONS", "device_and_dtype", "resolve_device", "resolve_precision", "torch_dtype"]

PRECISIONS = ("fp32", "fp16", "bf16")
_ALIASES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str, option: str = "device") -> str:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> the device to use ("cpu" or "cuda[:N]")."""
    device = (device or "auto").strip()
    if device == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdecimal())):
        raise InputError(f"'{device}': expected auto, cpu or cuda[:N]", option=option)
    if device.startswith("cuda") and not _cuda_available():
        raise InputError(f"'{device}': no CUDA device is available here; use cpu or auto", option=option)
    return device


def resolve_precision(precision: str, device: str, *, gpu_default: str = "fp16", option: str = "precision") -> str:
    """``auto`` | fp32 | fp16 | bf16 on ``device`` (already resolved) -> fp32, fp16 or bf16.

    ``gpu_default`` is what ``auto`` means on a GPU (CLIP encoders use fp16, language models ask for
    bf16); a GPU without bf16 gets fp16 instead.  fp16 on the CPU is refused: torch has no fast CPU
    kernels for it.
    """
    precision = _ALIASES.get(precision, precision)
    if precision == "auto":
        if not device.startswith("cuda"):
            return "fp32"
        if gpu_default == "bf16" and not _bf16_supported():
            return "fp16"
        return gpu_default
    if precision not in PRECISIONS:
        raise InputError(f"'{precision}': expected auto, {', '.join(PRECISIONS)}", option=option)
    if precision == "fp16" and device == "cpu":
        raise InputError(f"fp16 is not supported on CPU; use fp32 or bf16 (or {opt('device')} cuda)",
                         option=option)
    return precision


def _bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def torch_dtype(precision: str) -> Any:
    """The torch dtype of a resolved precision name."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def device_and_dtype(device: str, dtype: str, *, gpu_default: str = "bf16", option: str = "dtype") -> tuple[str, Any]:
    """The device and torch dtype of a language model (transformers LLMs, VLMs, hidden-state readers):
    ``auto`` is bf16 on a GPU that has it, fp16 on one that does not, fp32 on the CPU."""
    device = resolve_device(device)
    return device, torch_dtype(resolve_precision(dtype, device, gpu_default=gpu_default, option=option))
