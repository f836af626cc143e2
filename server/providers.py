"""Which onnxruntime execution providers to ask for.

CUDA is requested only when a GPU is actually visible: asking for it on a CPU machine makes
onnxruntime-gpu print errors before falling back. What a session really uses is read back from
``session.get_providers()``, never assumed from the request.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort

from driftline.errors import Unavailable

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def gpu_visible() -> bool:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def choose(device: str) -> list[str]:
    if device == "cpu":
        return [CPU]
    usable = CUDA in ort.get_available_providers() and gpu_visible()
    if device == "cuda" and not usable:
        raise Unavailable("--device cuda was asked for, but no GPU is visible or onnxruntime has no CUDA provider")
    return [CUDA, CPU] if usable else [CPU]
