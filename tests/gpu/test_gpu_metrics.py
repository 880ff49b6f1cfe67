"""With a session on the CUDA provider, the process reports a GPU in use and the GPU memory it holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.process_resources import GpuMemoryProbe, cuda_provider_loaded, gpu_status, resource_families
from processors.lipsync.engines.wav2lip import open_session
from tests.gpu.test_cuda_provider import tiny_model

pytestmark = pytest.mark.gpu


def test_a_cuda_session_makes_the_gpu_in_use_with_its_memory_in_the_families(tmp_path: Path) -> None:
    session = open_session(tiny_model(tmp_path / "tiny.onnx"), use_gpu=True)
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    assert cuda_provider_loaded()
    status = gpu_status(configured=True)
    assert status.in_use and status.reason is None
    families = {family.name: family for family in resource_families(GpuMemoryProbe())}
    assert families["avatar_process_cuda_provider_in_use"].samples[0].value == 1.0
    device = families["avatar_gpu_memory_used_bytes"].samples
    assert device and all(sample.value > 0 for sample in device)
