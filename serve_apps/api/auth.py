"""Login and the current caller.

    POST   /api/0/auth/login/     public       {"username", "password"} → session cookie
    GET    /api/0/auth/           the caller   who is logged in, its organizations, CSRF token
    DELETE /api/0/auth/           the caller   log out (a browser session's CSRF-checked)
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import StringConstraints

from events.errors import Unauthorized
from events.login_throttle import LoginLimits
from events.proxies import client_address
from serve_apps.api.deps import (
    SESSION_COOKIE,
    Credentials,
    Svc,
    caller_access,
    credentials,
    public_access,
)
from serve_apps.api.shapes import Body
from storage import tenancy
from storage.tenancy import Caller

router = APIRouter(tags=["auth"])


class Login(Body):
    username: Annotated[str, StringConstraints(max_length=tenancy.MAX_USERNAME_CHARS)]
    password: Annotated[str, StringConstraints(max_length=tenancy.MAX_PASSWORD_CHARS)]


def login_address(request: Request, trusted: tuple[str, ...]) -> str:
    """Who is logging in: the peer, or behind trusted proxies the address they saw
    (events/proxies.py; Serve's HAProxy appends it: ``option forwardfor``, cluster/haproxy.py)."""
    peer = request.client.host if request.client else ""
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for")) or None
    return client_address(peer, forwarded, trusted)[:64]


def _over_https(request: Request, trusted: tuple[str, ...]) -> bool:
    """HTTPS, or a trusted proxy says the client used it (X-Forwarded-Proto)."""
    peer = request.client.host if request.client else ""
    # A trusted peer hands on the forwarded client; any other answers itself.
    peer_is_proxy = client_address(peer, "forwarded", trusted) != peer
    return request.url.scheme == "https" or (
        peer_is_proxy and request.headers.get("x-forwarded-proto") == "https")


@router.post("/auth/login/")
def login(body: Login, request: Request, _: Annotated[None, Depends(public_access())],
          svc: Svc) -> JSONResponse:
    """Password login (rate limited per username and per address): sets the session cookie
    (HttpOnly, SameSite=Lax; Secure over HTTPS) and answers the CSRF token that unsafe
    requests must send in X-CSRFToken."""
    config = svc.config
    client_ip = login_address(request, config.trusted_proxies)
    limits = LoginLimits.of(config.login_max_failures, config.login_window_s,
                            config.login_max_delay_s)
    with svc.pool.connection() as conn, conn.transaction():
        tenancy.prune_login_state(conn, config.login_window_s)
        try:
            user = tenancy.login(conn, body.username, body.password, client_ip, limits)
        except tenancy.LoginThrottled as exc:  # the failures recorded so far must commit
            throttled: tenancy.LoginThrottled | None = exc
        else:
            throttled = None
    if throttled is not None:
        raise throttled
    if user is None:
        raise Unauthorized("wrong username or password")
    with svc.pool.connection() as conn, conn.transaction():
        session = tenancy.start_session(conn, user, config.session_lifetime_s)
    response = JSONResponse({"user": {"id": str(user), "username": body.username},
                             "csrfToken": session.csrf_token})
    response.set_cookie(SESSION_COOKIE, session.cookie, expires=session.expires_at,
                        httponly=True, samesite="lax", path="/",
                        secure=_over_https(request, config.trusted_proxies))
    return response


@router.get("/auth/")
def whoami(who: Annotated[Caller, Depends(caller_access())], creds: Annotated[Credentials, Depends(credentials)],
           svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        orgs = tenancy.caller_organizations(conn, who)
        csrf = None
        if creds.session and not creds.authorization:
            user = tenancy.session_user(conn, creds.session)
            csrf = None if user is None else user.csrf_token
    return {"user": None if who.user_id is None else {
                "id": str(who.user_id), "username": who.name},
            "organizations": orgs, "csrfToken": csrf}


@router.delete("/auth/", status_code=204)
def logout(_: Annotated[Caller, Depends(caller_access())], creds: Annotated[Credentials, Depends(credentials)],
           svc: Svc) -> Response:
    if creds.session:
        with svc.pool.connection() as conn, conn.transaction():
            tenancy.end_session(conn, creds.session)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
