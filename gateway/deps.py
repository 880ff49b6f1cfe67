"""FastAPI dependencies shared by the routes: the running services and the caller's identity."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import AuthError, Principal, bearer, principal_for
from gateway.services import Services


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def principal(request: Request) -> Principal:
    return principal_for(services(request).settings, bearer(request))


def require_admin(request: Request) -> Principal:
    who = principal(request)
    if not who.is_admin:
        raise AuthError("this needs the admin token", status_code=403)
    return who


# Parameter types for route functions: the caller and the running services, injected.
Caller = Annotated[Principal, Depends(principal)]
Running = Annotated[Services, Depends(services)]
