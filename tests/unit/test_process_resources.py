"""A process's memory and GPU as /metrics shows them: its resident size, whether the CUDA provider is in use,
the GPU memory nvidia-smi reports for it, and why no GPU is used (here, a machine without one)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import psutil

from infra.process_resources import (
    CUDA_PROVIDER_LIBRARY,
    GpuMemoryProbe,
    cuda_provider_loaded,
    gpu_status,
    parse_nvidia_smi,
    resident_bytes,
    resource_families,
)


def test_resident_bytes_is_this_processes_rss() -> None:
    rss = resident_bytes()
    assert rss is not None and abs(rss - psutil.Process().memory_info().rss) < 0.1 * rss


def test_the_cuda_provider_is_in_use_once_its_library_is_mapped_into_the_process(tmp_path: Path) -> None:
    assert not cuda_provider_loaded()  # this machine's onnxruntime has no CUDA provider
    maps = tmp_path / "maps"
    own = Path("/proc/self/maps").read_text().splitlines()[:3]
    maps.write_text("\n".join([*own, "7f12c0000000-7f12c8000000 r-xp 00000000 08:01 1234 /opt/venv/lib/python3.12/"
                               f"site-packages/onnxruntime/capi/{CUDA_PROVIDER_LIBRARY}.so"]) + "\n")
    assert cuda_provider_loaded(maps) and not cuda_provider_loaded(tmp_path / "no-such-file")


def test_nvidia_smi_answers_give_this_processes_memory_and_each_gpus_use_by_index() -> None:
    apps = "00000000:3B:00.0, 4242, 1530\n00000000:3B:00.0, 977, 300\n00000000:AF:00.0, 4242, 12\n"
    gpus = "00000000:3B:00.0, 0, 2100\n00000000:AF:00.0, 1, 40\n"
    use = parse_nvidia_smi(apps, gpus, pid=4242)
    assert use.process_bytes == {"0": 1530 * 2**20, "1": 12 * 2**20}
    assert use.device_used_bytes == {"0": 2100 * 2**20, "1": 40 * 2**20}
    assert parse_nvidia_smi("[N/A]\n", gpus, pid=4242).process_bytes == {}  # a container: no process ids seen


def test_without_a_gpu_the_families_say_rss_and_cuda_unused_and_have_no_gpu_memory() -> None:
    families = {family.name: family for family in resource_families(GpuMemoryProbe())}
    assert set(families) == {"avatar_process_resident_memory_bytes", "avatar_process_cuda_provider_in_use"}
    assert families["avatar_process_resident_memory_bytes"].samples[0].value > 10 * 2**20
    assert families["avatar_process_cuda_provider_in_use"].samples[0].value == 0.0


def test_a_configured_gpu_that_is_not_used_comes_with_the_reason() -> None:
    status = gpu_status(configured=True)
    assert status.configured and not status.in_use and status.reason is not None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "install onnxruntime-gpu" in status.reason
