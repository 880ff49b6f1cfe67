"""``/health`` (the process is up) and ``/ready`` (broker, database and processors are ready)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from gateway.deps import services
from gateway.services import Services
from gateway.status import REQUIRED_SERVICES

router = APIRouter(tags=["system"])


@router.get("/health", summary="The process is up")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Broker, database and processors are ready (503 lists what is missing)")
def ready(running: Annotated[Services, Depends(services)]) -> JSONResponse:  # sync: FastAPI runs it in a thread
    missing = []
    if not running.admin.broker_reachable(timeout_s=1.0):
        missing.append("broker")
    if not running.database_ok():
        missing.append("database")
    missing += [f"processor:{name}" for name in running.status.missing()]
    gpus = missing_gpus(running)
    missing += sorted({f"gpu:{service}" for service, _instance, _reason in gpus})
    body: dict[str, Any] = {
        "status": "ready" if not missing else "not_ready", "missing": missing,
        "processors": {name: [s.engine for s in running.status.live(name)] for name in REQUIRED_SERVICES}}
    if gpus:
        body["gpu"] = [{"service": service, "instance": instance, "reason": reason}
                       for service, instance, reason in gpus]
    return JSONResponse(body, status_code=200 if not missing else 503)


def missing_gpus(running: Services) -> list[tuple[str, str, str]]:
    """(service, instance, why) of each GPU-capable processor configured for a GPU (its own GPU_MEMORY_LIMIT, or
    this gateway's) that runs without one: a GPU deployment silently on CPU would miss every real-time deadline."""
    gateway_wants_gpu = running.settings.gpu_memory_limit > 0
    found = []
    for name in REQUIRED_SERVICES:
        for status in running.status.live(name):
            gpu = status.gpu
            if gpu is None or gpu.in_use or not (gpu.configured or gateway_wants_gpu):
                continue
            where = "this processor's" if gpu.configured else "the gateway's"
            found.append((name, status.instance, f"GPU_MEMORY_LIMIT is set ({where} settings) but no GPU is used: "
                                                 f"{gpu.reason or 'the CUDA provider is not loaded'}"))
    return found
