"""This process's memory and GPU, as metric families for /metrics: resident memory, whether ONNX Runtime's CUDA
provider is in use, the GPU memory it holds (nvidia-smi), and why no GPU is used when one is configured."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from schemas.status import GpuStatus, MetricFamily, MetricSample

# ONNX Runtime loads its CUDA provider's shared library only when a session asks for that provider, so the
# library being mapped into this process is what "the CUDA provider is in use here" means.
CUDA_PROVIDER_LIBRARY = "libonnxruntime_providers_cuda"
_NVIDIA_SMI_EVERY_S = 10.0  # a heartbeat comes every 2 s; nvidia-smi takes ~50 ms and need not run each time
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """Resident set size now (Linux /proc); None where /proc is not there."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return None


def cuda_provider_loaded(maps: Path = Path("/proc/self/maps")) -> bool:
    try:
        with maps.open(encoding="utf-8", errors="replace") as lines:
            return any(CUDA_PROVIDER_LIBRARY in line for line in lines)
    except OSError:
        return False


@dataclass(frozen=True)
class GpuUse:
    """GPU memory by GPU index (as nvidia-smi numbers them): what this process holds (absent in a container whose
    process ids nvidia-smi cannot see), and what the whole GPU has in use."""

    process_bytes: dict[str, int]
    device_used_bytes: dict[str, int]


def parse_nvidia_smi(apps_csv: str, gpus_csv: str, pid: int) -> GpuUse:
    """``--query-compute-apps=gpu_bus_id,pid,used_memory`` and ``--query-gpu=pci.bus_id,index,memory.used``, both
    ``--format=csv,noheader,nounits`` (MiB)."""
    index_of: dict[str, str] = {}
    device: dict[str, int] = {}
    for line in gpus_csv.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3 and parts[2].isdigit():
            index_of[parts[0]] = parts[1]
            device[parts[1]] = int(parts[2]) * 2**20
    process: dict[str, int] = {}
    for line in apps_csv.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3 and parts[1] == str(pid) and parts[2].isdigit():
            gpu = index_of.get(parts[0], parts[0])
            process[gpu] = process.get(gpu, 0) + int(parts[2]) * 2**20
    return GpuUse(process, device)


class GpuMemoryProbe:
    """Asks nvidia-smi for this process's GPU memory, at most every few seconds (cached in between)."""

    def __init__(self, every_s: float = _NVIDIA_SMI_EVERY_S) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._at = -float("inf")
        self._last: GpuUse | None = None

    def use(self) -> GpuUse | None:
        """None when nvidia-smi is not installed or fails (no driver, no GPU visible)."""
        with self._lock:
            if time.monotonic() - self._at >= self.every_s:
                self._at = time.monotonic()
                self._last = _query_nvidia_smi(os.getpid())
            return self._last


def _query_nvidia_smi(pid: int) -> GpuUse | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    answers = []
    for query in ("--query-compute-apps=gpu_bus_id,pid,used_memory", "--query-gpu=pci.bus_id,index,memory.used"):
        try:
            done = subprocess.run([smi, query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                                  timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        answers.append(done.stdout)
    return parse_nvidia_smi(answers[0], answers[1], pid)


def why_no_cuda_provider() -> str:
    """What stops ONNX Runtime from running on a GPU here, in words an operator can act on."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return ("onnxruntime has no CUDA provider: install onnxruntime-gpu in place of onnxruntime "
                f"(installed: {', '.join(onnxruntime.get_available_providers())})")
    return ("the CUDA provider is installed but no session uses it: no GPU is visible to this process (driver, "
            "CUDA_VISIBLE_DEVICES, `--gpus all` in Docker), or the engine runs on CPU (LIPSYNC_ENGINE)")


def gpu_status(configured: bool) -> GpuStatus:
    """Whether this process runs models on a GPU, and if not, why not."""
    in_use = cuda_provider_loaded()
    return GpuStatus(configured=configured, in_use=in_use, reason=None if in_use else why_no_cuda_provider())


def resource_families(gpu_memory: GpuMemoryProbe | None = None) -> list[MetricFamily]:
    """This process's figures; the GPU memory family only while the CUDA provider is in use (0 otherwise)."""
    families = []
    rss = resident_bytes()
    if rss is not None:
        families.append(MetricFamily(name="avatar_process_resident_memory_bytes", kind="gauge",
                                     help="resident memory (RSS) of the process",
                                     samples=[MetricSample(name="avatar_process_resident_memory_bytes", value=rss)]))
    in_use = cuda_provider_loaded()
    families.append(MetricFamily(
        name="avatar_process_cuda_provider_in_use", kind="gauge",
        help="1 if ONNX Runtime's CUDA provider is loaded in the process (a model runs on a GPU); 0: no GPU used",
        samples=[MetricSample(name="avatar_process_cuda_provider_in_use", value=1.0 if in_use else 0.0)]))
    use = (gpu_memory or GPU_MEMORY).use() if in_use else None
    if use is not None:
        for name, help_text, by_gpu in (
                ("avatar_process_gpu_memory_bytes", "GPU memory the process holds, per GPU (nvidia-smi; absent while "
                 "no GPU is used, or where nvidia-smi cannot see the process id, e.g. in a container)",
                 use.process_bytes),
                ("avatar_gpu_memory_used_bytes", "GPU memory in use on each GPU this process sees, by every process "
                 "(nvidia-smi); absent while the process uses no GPU", use.device_used_bytes)):
            if by_gpu:
                families.append(MetricFamily(name=name, kind="gauge", help=help_text, samples=[
                    MetricSample(name=name, labels={"gpu": gpu}, value=used) for gpu, used in sorted(by_gpu.items())]))
    return families


GPU_MEMORY = GpuMemoryProbe()
