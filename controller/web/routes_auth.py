"""The login page, ``/api/login``, ``/api/logout`` and ``/api/session`` (who am I)."""

from __future__ import annotations

import logging
from typing import Annotated, cast

from fastapi import APIRouter, Body, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from pepi_fleet.controller.web.api_models import ApiError, LoginRequest, SessionOut
from pepi_fleet.controller.web.routes_deps import PrincipalDep
from pepi_fleet.controller.web.routes_page import NO_CACHE, render, static_version
from pepi_fleet.controller.web.security import WebAccess, session_cookie
from pepi_fleet.controller.web.sessions import SESSION_COOKIE

logger = logging.getLogger(__name__)

router = APIRouter(tags=["session"])

LOGIN_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ApiError, "description": "Wrong user name or password"},
    409: {"model": ApiError, "description": "This controller requires no login"},
    429: {"model": ApiError, "description": "Too many failed logins from this address"},
}


def access_of(request: Request) -> WebAccess:
    """The app's admission rules (sessions, users)."""
    return cast(WebAccess, request.app.state.access)


def session_of(principal: PrincipalDep, access: WebAccess) -> SessionOut:
    """The answer of the session routes for ``principal``."""
    if principal is None:
        return SessionOut(user=None, role=None, login_required=access.login_required)
    return SessionOut(
        user=principal.name or None, role=principal.role, login_required=access.login_required
    )


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, principal: PrincipalDep) -> Response:
    """The login form (its script posts JSON to ``/api/login``)."""
    if principal is not None:
        return RedirectResponse("/", status_code=303)
    return HTMLResponse(render("login.html", version=static_version()), headers=NO_CACHE)


@router.post("/api/login", summary="Log in (sets the session cookie)", responses=LOGIN_ERRORS)
def login(
    request: Request, response: Response, credentials: Annotated[LoginRequest, Body()]
) -> SessionOut:
    """Check a user's password and start a session: an ``HttpOnly``, ``SameSite=Strict``
    cookie (``Secure`` over HTTPS) valid for 7 days or until ``/api/logout``."""
    access = access_of(request)
    if not access.login_required or access.store is None:
        raise HTTPException(409, "this controller requires no login (it runs with --auth off)")
    address = request.client.host if request.client else "?"
    wait = access.throttle.attempt(address)
    if wait > 0:
        raise HTTPException(
            429,
            f"too many failed logins from {address}: try again in {wait:.0f} s",
            headers={"Retry-After": str(int(wait) + 1)},
        )
    principal = access.store.verify_password(credentials.username, credentials.password)
    if principal is None:
        logger.warning("failed web login as %r from %s", credentials.username[:64], address)
        raise HTTPException(401, "wrong user name or password")
    access.throttle.succeeded(address)
    old = session_cookie(request.headers)
    if old:
        access.sessions.close(old)
    session_id = access.sessions.open(principal.name)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(access.sessions.ttl_s),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    logger.info("web login: %s (%s) from %s", principal.name, principal.role, address)
    return session_of(principal, access)


@router.post("/api/logout", summary="Log out (ends the session)")
def logout(
    request: Request, response: Response, _body: Annotated[dict[str, object], Body()]
) -> SessionOut:
    """End this browser's session; the cookie is cleared."""
    access = access_of(request)
    session_id = session_cookie(request.headers)
    if session_id:
        access.sessions.close(session_id)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return SessionOut(user=None, role=None, login_required=access.login_required)


@router.get("/api/session", summary="Who is logged in")
def session(request: Request, principal: PrincipalDep) -> SessionOut:
    """The user (or API token) this request comes from and its role; ``user`` null when
    nobody is logged in, or the controller requires no login (then ``role`` is operator)."""
    return session_of(principal, access_of(request))
