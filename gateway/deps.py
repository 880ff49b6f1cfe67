"""FastAPI dependencies shared by the routes: the running services and the caller's identity.

Every dependency here is ``async`` though none awaits anything: FastAPI runs a plain ``def`` dependency on a
worker thread, and each hop back waits for the event loop's next turn, which a CPU-starved gateway gave 50-600 ms
apart (measured at load 12-18 on 2 cores: a WebRTC flush held up to 1.6 s by three such hops). They read
``app.state`` and check an HMAC, so the loop is the cheaper place to run them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import AuthError, Principal, bearer, principal_for
from gateway.services import Services


async def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def principal(request: Request) -> Principal:
    return principal_for((await services(request)).settings, bearer(request))


async def require_admin(request: Request) -> Principal:
    who = await principal(request)
    if not who.is_admin:
        raise AuthError("this needs the admin token", status_code=403)
    return who


# Parameter types for route functions: the caller and the running services, injected.
Caller = Annotated[Principal, Depends(principal)]
Running = Annotated[Services, Depends(services)]
