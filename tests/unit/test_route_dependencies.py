"""Every route's dependencies run on the gateway's event loop: none costs a worker-thread hop before the route."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gateway.routes import ROUTERS


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _routes() -> list[APIRoute]:
    return [route for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)]


def test_no_route_resolves_a_dependency_on_a_worker_thread() -> None:
    # FastAPI runs a plain `def` dependency on a worker thread; each hop back waits for the event loop's next
    # turn, which a CPU-starved gateway gave 50-600 ms apart (a WebRTC peer's flush arrived ~1 s late).
    on_a_thread = sorted({f"{route.path}: {call.__name__}" for route in _routes() for call in _calls(route.dependant)
                          if not inspect.iscoroutinefunction(call)})
    assert on_a_thread == [], on_a_thread


def test_the_webrtc_peer_interrupt_itself_runs_on_the_event_loop() -> None:
    interrupt = next(route for route in _routes() if route.path == "/webrtc/peers/{peer_id}/interrupt")
    assert inspect.iscoroutinefunction(interrupt.endpoint)
    assert len(list(_calls(interrupt.dependant))) >= 3, "the caller, the services and the hub are dependencies"
