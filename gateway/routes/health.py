"""``/health`` (the process is up) and ``/ready`` (broker, database and processors are ready)."""

from __future__ import annotations

from typing import Annotated

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
    body = {"status": "ready" if not missing else "not_ready", "missing": missing,
            "processors": {name: [s.engine for s in running.status.live(name)] for name in REQUIRED_SERVICES}}
    return JSONResponse(body, status_code=200 if not missing else 503)
