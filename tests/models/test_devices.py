"""The one device and precision resolver (on this CPU-only machine: auto is the CPU, CUDA is refused)."""

from __future__ import annotations

import pytest
import torch

from clipclust.errors import InputError
from clipclust.models.devices import resolve_device, resolve_precision

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answers of a machine without CUDA")


@needs_no_gpu
def test_auto_is_the_cpu_and_cuda_is_refused_not_replaced():
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError) as caught:
        resolve_device("cuda:0")
    assert caught.value.option == "device" and "no CUDA device" in str(caught.value)


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "mps0", ""])
def test_unknown_devices_name_the_choices(bad):
    if bad == "":
        assert resolve_device(bad) in ("cpu", "cuda")
        return
    with pytest.raises(InputError, match="expected auto, cpu or cuda"):
        resolve_device(bad, option="head_device")


def test_precisions_on_the_cpu():
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cpu", gpu_default="bf16") == "fp32"
    assert resolve_precision("bfloat16", "cpu") == "bf16"
    with pytest.raises(InputError, match="fp16 is not supported on CPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(InputError, match="expected auto, fp32, fp16, bf16"):
        resolve_precision("int8", "cpu")


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_on_a_gpu_is_fp16_for_clip_and_bf16_for_language_models_where_supported(monkeypatch, bf16):
    from clipclust.models import devices

    monkeypatch.setattr(devices, "_cuda_available", lambda: True)
    monkeypatch.setattr(devices, "_bf16_supported", lambda: bf16)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cuda:1", gpu_default="bf16") == ("bf16" if bf16 else "fp16")
    assert resolve_precision("fp16", "cuda") == "fp16"
