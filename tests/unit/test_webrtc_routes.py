"""The WebRTC routes' wiring: the peer's flush waits for no worker thread on its way from the request."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from gateway.routes.webrtc import router


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _route(path: str, method: str) -> APIRoute:
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == path and method in r.methods)


def test_the_peer_interrupt_and_every_dependency_of_it_run_on_the_event_loop_not_a_worker_thread() -> None:
    # FastAPI runs a plain `def` dependency (or endpoint) on a worker thread; each hop back waits for the event
    # loop's next turn, which a CPU-starved gateway gave 50-600 ms apart (the ~1 s late flush of issue 13).
    route = _route("/webrtc/peers/{peer_id}/interrupt", "POST")
    assert inspect.iscoroutinefunction(route.endpoint)
    on_a_thread = [call.__name__ for call in _calls(route.dependant) if not inspect.iscoroutinefunction(call)]
    assert on_a_thread == [], on_a_thread


def test_the_offer_and_close_routes_resolve_the_caller_and_the_hub_on_the_event_loop_too() -> None:
    for path, method in (("/webrtc/offer", "POST"), ("/webrtc/peers/{peer_id}", "DELETE")):
        route = _route(path, method)
        on_a_thread = [call.__name__ for call in _calls(route.dependant) if not inspect.iscoroutinefunction(call)]
        assert on_a_thread == [], (path, on_a_thread)
