"""GPU tests run only with ENABLE_GPU_TESTS=true, a CUDA build of ONNX Runtime and a GPU; else each says why."""

from __future__ import annotations

import os
import shutil
import subprocess

import onnxruntime as ort
import pytest


def why_no_gpu() -> str | None:
    """None when the CUDA provider can be tried here, else the reason the GPU tests skip."""
    if os.environ.get("ENABLE_GPU_TESTS", "").lower() not in ("1", "true", "yes"):
        return "GPU tests are opt-in: run `ENABLE_GPU_TESTS=true pytest -m gpu`"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"onnxruntime {ort.__version__} here has no CUDAExecutionProvider (providers: "
                f"{', '.join(ort.get_available_providers())}): install onnxruntime-gpu instead of onnxruntime")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no nvidia-smi on PATH: no NVIDIA driver here (in Docker: run with --gpus all)"
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return f"nvidia-smi sees no GPU: {(listed.stderr or listed.stdout).strip()[:200]}"
    return None


@pytest.fixture(autouse=True)
def gpu_available() -> None:
    reason = why_no_gpu()
    if reason is not None:
        pytest.skip(reason)
